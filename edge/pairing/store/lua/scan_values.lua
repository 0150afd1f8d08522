-- ARGV: key pattern -> key, value, ... for every string key matching it.
local out, cursor = {}, '0'
repeat
  local reply = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    local value = redis.call('GET', key)
    if value then
      out[#out + 1] = key
      out[#out + 1] = value
    end
  end
until cursor == '0'
return out
