-- A message with two From: header fields is refused at end of headers with
-- the example's own code (550 5.7.1, SMFIR_REPLYCODE).
-- Globals from the test (miltertest -D): socket.
-- miltertest does not print a script's error: say it, then stop with a non-zero exit.
local function fail(msg) mt.echo("FAIL: " .. msg) error(msg, 2) end
local conn = mt.connect("unix:" .. socket)
if conn == nil then fail("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "client.example", "192.0.2.1") ~= nil then fail("conninfo failed") end
if mt.mailfrom(conn, "alice@example.org") ~= nil then fail("mailfrom failed") end
if mt.rcptto(conn, "bob@example.test") ~= nil then fail("rcptto failed") end
if mt.header(conn, "From", "Alice <alice@example.org>") ~= nil then fail("header failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("first From: expected continue") end
if mt.header(conn, "From", "Bank <security@bank.example>") ~= nil then fail("header failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("second From: expected continue") end
if mt.eoh(conn) ~= nil then fail("eoh failed") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then fail("eoh: expected a reply code, got " .. mt.getreply(conn)) end
mt.disconnect(conn)
