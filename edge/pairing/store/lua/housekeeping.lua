-- ARGV: stream, max length, oldest 'at' to keep, pending, invites, invite key prefix, stale score
local stream = ARGV[1]
redis.call('XTRIM', stream, 'MAXLEN', ARGV[2])
local cutoff = tonumber(ARGV[3])
local start = '-'
while true do
  local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', 200)
  if #batch == 0 then
    redis.call('XTRIM', stream, 'MAXLEN', 0)
    break
  end
  local keep = nil
  for _, entry in ipairs(batch) do
    local fields, at = entry[2], nil
    for f = 1, #fields, 2 do
      if fields[f] == 'at' then at = tonumber(fields[f + 1]) end
    end
    if at == nil or at >= cutoff then
      keep = entry[1]
      break
    end
  end
  if keep then
    redis.call('XTRIM', stream, 'MINID', keep)
    break
  end
  start = '(' .. batch[#batch][1]
end
redis.call('ZREMRANGEBYSCORE', ARGV[4], '-inf', '(' .. ARGV[7])
for _, id in ipairs(redis.call('ZRANGE', ARGV[5], 0, -1)) do
  if redis.call('EXISTS', ARGV[6] .. id) == 0 then redis.call('ZREM', ARGV[5], id) end
end
return 1
