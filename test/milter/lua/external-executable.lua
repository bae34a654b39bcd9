-- Mail from outside with an executable attachment is refused at end of
-- message with the example's code, enhanced code and text, and none of the
-- modifications is asked for.
-- Globals from the test (miltertest -D): socket.
-- miltertest does not print a script's error: say it, then stop with a non-zero exit.
local function fail(msg) mt.echo("FAIL: " .. msg) error(msg, 2) end
local conn = mt.connect("unix:" .. socket)
if conn == nil then fail("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "client.example", "192.0.2.1") ~= nil then fail("conninfo failed") end
if mt.mailfrom(conn, "alice@example.org") ~= nil then fail("mailfrom failed") end
if mt.rcptto(conn, "bob@example.test") ~= nil then fail("rcptto failed") end
if mt.header(conn, "From", "Alice <alice@example.org>") ~= nil then fail("header failed") end
if mt.header(conn, "Subject", "your invoice") ~= nil then fail("header failed") end
if mt.header(conn, "Content-Type", "multipart/mixed; boundary=\"b1\"") ~= nil then fail("header failed") end
if mt.eoh(conn) ~= nil then fail("eoh failed") end
if mt.bodystring(conn, "--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\n" ..
  "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"invoice.exe\"\r\n" ..
  "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n--b1--\r\n") ~= nil then fail("body failed") end
if mt.eom(conn) ~= nil then fail("eom failed") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then fail("eom: expected a reply code, got " .. mt.getreply(conn)) end
if not mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.1", "Executable attachments (invoice.exe) are not accepted here") then
  fail("eom: not the reply 550 5.7.1 Executable attachments (invoice.exe) are not accepted here")
end
if mt.eom_check(conn, MT_HDRINSERT) or mt.eom_check(conn, MT_HDRCHANGE) or mt.eom_check(conn, MT_RCPTADD, "<archive@example.test>") then
  fail("eom: a refused message was modified")
end
mt.disconnect(conn)
