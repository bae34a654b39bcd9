-- A recipient in the example's REFUSE list gets a reply with its own code
-- (550 5.1.1, SMFIR_REPLYCODE) at RCPT; the other recipients go on, and so
-- does the message.
-- Globals from the test (miltertest -D): socket.
-- miltertest does not print a script's error: say it, then stop with a non-zero exit.
local function fail(msg) mt.echo("FAIL: " .. msg) error(msg, 2) end
local conn = mt.connect("unix:" .. socket)
if conn == nil then fail("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "client.example", "192.0.2.1") ~= nil then fail("conninfo failed") end
if mt.mailfrom(conn, "alice@example.org") ~= nil then fail("mailfrom failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("mailfrom: expected continue") end
if mt.rcptto(conn, "<NoReply@example.test>") ~= nil then fail("rcptto failed") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then fail("rcptto noreply: expected a reply code, got " .. mt.getreply(conn)) end
if mt.rcptto(conn, "<bob@example.test>") ~= nil then fail("rcptto failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("rcptto bob: expected continue, got " .. mt.getreply(conn)) end
mt.disconnect(conn)
