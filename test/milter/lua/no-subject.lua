-- External mail without a Subject gets one ("[EXTERNAL]", added); a
-- multipart body is left alone (the warning goes into plain text only).
-- The client is an IPv6 address outside the internal networks.
-- Globals from the test (miltertest -D): socket.
local conn = mt.connect("unix:" .. socket)
if conn == nil then error("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "client.example", "2001:db8::25") ~= nil then error("conninfo failed") end
if mt.mailfrom(conn, "alice@example.org") ~= nil then error("mailfrom failed") end
if mt.rcptto(conn, "bob@example.test") ~= nil then error("rcptto failed") end
if mt.header(conn, "From", "Alice <alice@example.org>") ~= nil then error("header failed") end
if mt.header(conn, "Content-Type", "multipart/alternative; boundary=x") ~= nil then error("header failed") end
if mt.eoh(conn) ~= nil then error("eoh failed") end
if mt.bodystring(conn, "--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n") ~= nil then error("body failed") end
if mt.eom(conn) ~= nil then error("eom failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("eom: expected continue, got " .. mt.getreply(conn)) end
if not mt.eom_check(conn, MT_HDRADD, "Subject", "[EXTERNAL]") then error("eom: Subject [EXTERNAL] not added") end
if mt.eom_check(conn, MT_BODYCHANGE) then error("eom: a multipart body was replaced") end
mt.disconnect(conn)
