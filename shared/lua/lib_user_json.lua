-- the public user record as JSON, from the user's id and the hash's "r" (a JSON array
-- of the fields after the id: shared.codes.pack_record)
local function user_json(uid, record)
  local names = {"username", "first_name", "last_name", "language_code"}
  local ok, fields = pcall(cjson.decode, record or "")
  if not ok or type(fields) ~= "table" then
    fields = {}
  end
  local parts = {'{"id":' .. uid}
  for i, name in ipairs(names) do
    local value = fields[i]
    parts[#parts + 1] = ',"' .. name .. '":' .. (value == nil and "null" or cjson.encode(value))
  end
  return table.concat(parts) .. "}"
end
