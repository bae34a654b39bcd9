-- A message with two From: header fields is refused at end of headers with
-- the example's own code (550 5.7.1, SMFIR_REPLYCODE).
-- Globals from the test (miltertest -D): socket.
local conn = mt.connect("unix:" .. socket)
if conn == nil then error("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "client.example", "192.0.2.1") ~= nil then error("conninfo failed") end
if mt.mailfrom(conn, "alice@example.org") ~= nil then error("mailfrom failed") end
if mt.rcptto(conn, "bob@example.test") ~= nil then error("rcptto failed") end
if mt.header(conn, "From", "Alice <alice@example.org>") ~= nil then error("header failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("first From: expected continue") end
if mt.header(conn, "From", "Bank <security@bank.example>") ~= nil then error("header failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("second From: expected continue") end
if mt.eoh(conn) ~= nil then error("eoh failed") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then error("eoh: expected a reply code, got " .. mt.getreply(conn)) end
mt.disconnect(conn)
