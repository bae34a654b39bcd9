-- The same attachment from inside (127.0.0.1) is put on hold (quarantine)
-- with the reason in a header; the message is neither tagged nor rewritten,
-- and the archive still gets its copy. A missing From: is not refused from
-- inside.
-- Globals from the test (miltertest -D): socket, sha (SHA-256 of the body).
-- miltertest does not print a script's error: say it, then stop with a non-zero exit.
-- Header values come with their leading space: miltertest offers SMFIP_HDR_LEADSPC,
-- so mailprocd sends exactly the bytes after the colon ("Subject: [EXTERNAL] hello").
local function fail(msg) mt.echo("FAIL: " .. msg) error(msg, 2) end
local conn = mt.connect("unix:" .. socket)
if conn == nil then fail("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "localhost", "127.0.0.1") ~= nil then fail("conninfo failed") end
if mt.mailfrom(conn, "carol@example.test") ~= nil then fail("mailfrom failed") end
if mt.rcptto(conn, "bob@example.test") ~= nil then fail("rcptto failed") end
-- No From: header (a local program's mail): refused from outside, left to Postfix from inside.
if mt.header(conn, "Subject", "build script") ~= nil then fail("header failed") end
if mt.eoh(conn) ~= nil then fail("eoh failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("eoh without From from inside: expected continue, got " .. mt.getreply(conn)) end
if mt.bodystring(conn, "Content-Disposition: attachment; filename=run.js\r\n\r\nalert(1)\r\n") ~= nil then fail("body failed") end
if mt.eom(conn) ~= nil then fail("eom failed") end
-- continue at end of message is SMFIR_ACCEPT on the wire, as libmilter sends it.
if mt.getreply(conn) ~= SMFIR_ACCEPT then fail("eom: expected accept, got " .. mt.getreply(conn)) end
local function want(ok, what) if not ok then fail("eom: " .. what) end end
want(mt.eom_check(conn, MT_QUARANTINE, "executable attachment run.js"), "not quarantined with the reason")
want(mt.eom_check(conn, MT_HDRADD, "X-Site-Policy-Hold", " executable attachment run.js"), "X-Site-Policy-Hold not added")
want(mt.eom_check(conn, MT_HDRINSERT, "X-Site-Policy", " internal; held; body-sha256=" .. sha, 0), "X-Site-Policy not inserted")
want(mt.eom_check(conn, MT_RCPTADD, "<archive@example.test>"), "archive@example.test not added")
want(not mt.eom_check(conn, MT_HDRCHANGE), "a header was changed on internal mail")
want(not mt.eom_check(conn, MT_BODYCHANGE), "the body was replaced on internal mail")
mt.disconnect(conn)
