-- Plain-text mail from outside (192.0.2.1): the Subject is tagged, the
-- warning is appended to the body, the retired recipient is replaced by its
-- successor, the archive gets a copy, the sender's X-Site-Policy is deleted
-- and ours is inserted first.
-- Globals from the test (miltertest -D): socket, warning (the example's
-- WARNING), sha (SHA-256 of the body sent below).
-- miltertest does not print a script's error: say it, then stop with a non-zero exit.
-- Header values come with their leading space: miltertest offers SMFIP_HDR_LEADSPC,
-- so mailprocd sends exactly the bytes after the colon ("Subject: [EXTERNAL] hello").
local function fail(msg) mt.echo("FAIL: " .. msg) error(msg, 2) end
local conn = mt.connect("unix:" .. socket)
if conn == nil then fail("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "client.example", "192.0.2.1") ~= nil then fail("conninfo failed") end
if mt.mailfrom(conn, "alice@example.org") ~= nil then fail("mailfrom failed") end
if mt.rcptto(conn, "bob@example.test") ~= nil then fail("rcptto failed") end
if mt.rcptto(conn, "old-sales@example.test") ~= nil then fail("rcptto failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("rcptto old-sales: expected continue") end
if mt.header(conn, "From", "Alice <alice@example.org>") ~= nil then fail("header failed") end
if mt.header(conn, "Subject", "hello") ~= nil then fail("header failed") end
if mt.header(conn, "Content-Type", "text/plain; charset=utf-8") ~= nil then fail("header failed") end
-- The sender's own stamp, to pass for internal mail: deleted.
if mt.header(conn, "X-Site-Policy", "internal; unchanged") ~= nil then fail("header failed") end
if mt.eoh(conn) ~= nil then fail("eoh failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("eoh: expected continue") end
if mt.bodystring(conn, "Hi Bob,\r\nsee you at 10.\r\n") ~= nil then fail("body failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("body: expected continue") end
if mt.eom(conn) ~= nil then fail("eom failed") end
-- continue at end of message is SMFIR_ACCEPT on the wire, as libmilter sends it.
if mt.getreply(conn) ~= SMFIR_ACCEPT then fail("eom: expected accept, got " .. mt.getreply(conn)) end
local function want(ok, what) if not ok then fail("eom: " .. what) end end
want(mt.eom_check(conn, MT_HDRCHANGE, "Subject", " [EXTERNAL] hello"), "Subject not changed to [EXTERNAL] hello")
want(mt.eom_check(conn, MT_BODYCHANGE, "Hi Bob,\r\nsee you at 10.\r\n\r\n-- \r\n" .. warning .. "\r\n"), "body not replaced by body + warning")
want(mt.eom_check(conn, MT_RCPTDELETE, "<old-sales@example.test>"), "old-sales@example.test not deleted")
want(mt.eom_check(conn, MT_RCPTADD, "<sales@example.test>"), "sales@example.test not added")
want(mt.eom_check(conn, MT_RCPTADD, "<archive@example.test>"), "archive@example.test not added")
want(mt.eom_check(conn, MT_HDRINSERT, "X-Site-Policy",
  " external; tagged, warned, old-sales@example.test->sales@example.test; body-sha256=" .. sha, 0), "X-Site-Policy not inserted first with the decisions and the body hash")
want(mt.eom_check(conn, MT_HDRDELETE, "X-Site-Policy", 1), "the sender's X-Site-Policy not deleted")
want(not mt.eom_check(conn, MT_QUARANTINE), "quarantined, but nothing asked for it")
mt.disconnect(conn)
