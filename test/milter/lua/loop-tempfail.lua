-- The loop fixture (test/milter/fixtures/loop.ts) never returns from a header
-- whose value is "loop". mailprocd answers SMFIR_TEMPFAIL at
-- milter.filter_timeout (on_filter_error: tempfail), so the MTA defers the
-- message instead of waiting; a new connection is served by the restarted
-- worker and gets the filter's modification at end of message.
-- Globals from the test (miltertest -D): socket.
mt.set_timeout(30)
local conn = mt.connect("unix:" .. socket)
if conn == nil then error("cannot connect to unix:" .. socket) end
if mt.header(conn, "Subject", "fine") ~= nil then error("header failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("first header: expected continue") end
if mt.header(conn, "X-Stuck", "loop") ~= nil then error("header failed") end
if mt.getreply(conn) ~= SMFIR_TEMPFAIL then error("looping header: expected tempfail, got " .. mt.getreply(conn)) end
mt.disconnect(conn)

conn = mt.connect("unix:" .. socket)
if conn == nil then error("cannot connect again to unix:" .. socket) end
if mt.header(conn, "Subject", "again") ~= nil then error("header failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("header on the new connection: expected continue") end
if mt.eom(conn) ~= nil then error("eom failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("eom: expected continue, got " .. mt.getreply(conn)) end
if not mt.eom_check(conn, MT_HDRADD, "X-Headers", "1") then error("eom: X-Headers: 1 not added by the restarted filter") end
mt.disconnect(conn)
