-- examples/milter/site-policy.mjs handles connect, envfrom, envrcpt, header,
-- eoh, body and eom: mailprocd asks the MTA not to send HELO, DATA or unknown
-- commands (fewer round trips), and to send everything the filter reads.
-- Globals from the test (miltertest -D): socket.
local conn = mt.connect("unix:" .. socket)
if conn == nil then error("cannot connect to unix:" .. socket) end
if mt.conninfo(conn, "client.example", "192.0.2.1") ~= nil then error("conninfo failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("conninfo: expected continue") end
for name, bit in pairs({ SMFIP_NOHELO = SMFIP_NOHELO, SMFIP_NODATA = SMFIP_NODATA, SMFIP_NOUNKNOWN = SMFIP_NOUNKNOWN }) do
  if not mt.test_option(conn, bit) then error(name .. " not negotiated: the filter defines no method for it") end
end
for name, bit in pairs({ SMFIP_NOCONNECT = SMFIP_NOCONNECT, SMFIP_NOMAIL = SMFIP_NOMAIL, SMFIP_NORCPT = SMFIP_NORCPT,
                         SMFIP_NOHDRS = SMFIP_NOHDRS, SMFIP_NOEOH = SMFIP_NOEOH, SMFIP_NOBODY = SMFIP_NOBODY }) do
  if mt.test_option(conn, bit) then error(name .. " negotiated, but the filter handles that step") end
end
if mt.helo(conn, "client.example") == nil then error("helo was sent although SMFIP_NOHELO was negotiated") end
mt.disconnect(conn)
