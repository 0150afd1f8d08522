-- ARGV: zset key, record key prefix, min score or '' for all, max score -> id, record, ...
local ids
if ARGV[3] == '' then
  ids = redis.call('ZRANGE', ARGV[1], 0, -1)
else
  ids = redis.call('ZRANGEBYSCORE', ARGV[1], ARGV[3], ARGV[4])
end
local out = {}
for start = 1, #ids, 500 do
  local keys = {}
  for n = start, math.min(start + 499, #ids) do keys[#keys + 1] = ARGV[2] .. ids[n] end
  local values = redis.call('MGET', unpack(keys))
  for n = 1, #keys do
    out[#out + 1] = ids[start + n - 1]
    out[#out + 1] = values[n]
  end
end
return out
