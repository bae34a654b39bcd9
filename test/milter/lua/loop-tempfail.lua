-- The loop fixture (test/milter/fixtures/loop.ts) never returns from a header
-- whose value is "loop". mailprocd answers SMFIR_TEMPFAIL at
-- milter.filter_timeout (on_filter_error: tempfail), so the MTA defers the
-- message instead of waiting; a new connection is served by the restarted
-- worker and gets the filter's modification at end of message.
-- Globals from the test (miltertest -D): socket.
-- miltertest does not print a script's error: say it, then stop with a non-zero exit.
-- Header values come with their leading space: miltertest offers SMFIP_HDR_LEADSPC,
-- so mailprocd sends exactly the bytes after the colon ("Subject: [EXTERNAL] hello").
local function fail(msg) mt.echo("FAIL: " .. msg) error(msg, 2) end
mt.set_timeout(30)
local conn = mt.connect("unix:" .. socket)
if conn == nil then fail("cannot connect to unix:" .. socket) end
if mt.header(conn, "Subject", "fine") ~= nil then fail("header failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("first header: expected continue") end
if mt.header(conn, "X-Stuck", "loop") ~= nil then fail("header failed") end
if mt.getreply(conn) ~= SMFIR_TEMPFAIL then fail("looping header: expected tempfail, got " .. mt.getreply(conn)) end
mt.disconnect(conn)

conn = mt.connect("unix:" .. socket)
if conn == nil then fail("cannot connect again to unix:" .. socket) end
if mt.header(conn, "Subject", "again") ~= nil then fail("header failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("header on the new connection: expected continue") end
if mt.eom(conn) ~= nil then fail("eom failed") end
-- continue at end of message is SMFIR_ACCEPT on the wire, as libmilter sends it.
if mt.getreply(conn) ~= SMFIR_ACCEPT then fail("eom: expected accept, got " .. mt.getreply(conn)) end
if not mt.eom_check(conn, MT_HDRADD, "X-Headers", " 1") then fail("eom: X-Headers: 1 not added by the restarted filter") end
mt.disconnect(conn)
