-- External mail without a Subject gets one ("[EXTERNAL]", added); a
-- multipart body is left alone (the warning goes into plain text only).
-- The client is an IPv6 address outside the internal networks.
-- Globals from the test (miltertest -D): socket.
-- miltertest does not print a script's error: say it, then stop with a non-zero exit.
-- Header values come with their leading space: miltertest offers SMFIP_HDR_LEADSPC,
-- so mailprocd sends exactly the bytes after the colon ("Subject: [EXTERNAL] hello").
local function fail(msg) mt.echo("FAIL: " .. msg) error(msg, 2) end
local conn = mt.connect("unix:" .. socket)
if conn == nil then fail("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "client.example", "2001:db8::25") ~= nil then fail("conninfo failed") end
if mt.mailfrom(conn, "alice@example.org") ~= nil then fail("mailfrom failed") end
if mt.rcptto(conn, "bob@example.test") ~= nil then fail("rcptto failed") end
if mt.header(conn, "From", "Alice <alice@example.org>") ~= nil then fail("header failed") end
if mt.header(conn, "Content-Type", "multipart/alternative; boundary=x") ~= nil then fail("header failed") end
if mt.eoh(conn) ~= nil then fail("eoh failed") end
if mt.bodystring(conn, "--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n") ~= nil then fail("body failed") end
if mt.eom(conn) ~= nil then fail("eom failed") end
-- continue at end of message is SMFIR_ACCEPT on the wire, as libmilter sends it.
if mt.getreply(conn) ~= SMFIR_ACCEPT then fail("eom: expected accept, got " .. mt.getreply(conn)) end
if not mt.eom_check(conn, MT_HDRADD, "Subject", " [EXTERNAL]") then fail("eom: Subject [EXTERNAL] not added") end
if mt.eom_check(conn, MT_BODYCHANGE) then fail("eom: a multipart body was replaced") end
mt.disconnect(conn)
