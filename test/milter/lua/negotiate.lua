-- examples/milter/site-policy.mjs handles connect, envfrom, envrcpt, header,
-- eoh, body and eom: mailprocd asks the MTA not to send HELO, DATA or unknown
-- commands (fewer round trips), and to send everything the filter reads.
-- Globals from the test (miltertest -D): socket.
-- miltertest does not print a script's error: say it, then stop with a non-zero exit.
local function fail(msg) mt.echo("FAIL: " .. msg) error(msg, 2) end
local conn = mt.connect("unix:" .. socket)
if conn == nil then fail("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "client.example", "192.0.2.1") ~= nil then fail("conninfo failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("conninfo: expected continue") end
for name, bit in pairs({ SMFIP_NOHELO = SMFIP_NOHELO, SMFIP_NODATA = SMFIP_NODATA, SMFIP_NOUNKNOWN = SMFIP_NOUNKNOWN }) do
  if not mt.test_option(conn, bit) then fail(name .. " not negotiated: the filter defines no method for it") end
end
for name, bit in pairs({ SMFIP_NOCONNECT = SMFIP_NOCONNECT, SMFIP_NOMAIL = SMFIP_NOMAIL, SMFIP_NORCPT = SMFIP_NORCPT,
                         SMFIP_NOHDRS = SMFIP_NOHDRS, SMFIP_NOEOH = SMFIP_NOEOH, SMFIP_NOBODY = SMFIP_NOBODY }) do
  if mt.test_option(conn, bit) then fail(name .. " negotiated, but the filter handles that step") end
end
-- miltertest refuses (raises) a step the filter negotiated away.
if pcall(mt.helo, conn, "client.example") then fail("helo was sent although SMFIP_NOHELO was negotiated") end
mt.disconnect(conn)
