-- One ledger step, committed whole or not at all.
-- ARGV: op key, seq key, stream key, max stream length, how long (ms) the op key is
-- remembered, then counted groups: guards (kind, key, a, b), writes (kind, key, a, b, c),
-- events (type, data, at). A guard that no longer holds answers {'conflict', key}; an op
-- key already present (a re-sent commit) answers {'replayed', seq}.
local argv = ARGV
local done = redis.call('GET', argv[1])
if done then return {'replayed', done} end
local seq_key, stream_key, maxlen, replay_ms = argv[2], argv[3], argv[4], argv[5]
local i = 6
for g = 1, tonumber(argv[i]) do
  local kind, key, a, b = argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4]
  i = i + 4
  local holds
  if kind == 'is' then
    holds = redis.call('GET', key) == a
  elseif kind == 'absent' then
    holds = redis.call('EXISTS', key) == 0
  elseif kind == 'free' then
    local value = redis.call('GET', key)
    holds = value == false or value == a
  elseif kind == 'below' then
    holds = redis.call('ZCOUNT', key, '(' .. a, '+inf') < tonumber(b)
  else
    return redis.error_reply('ERR edge commit: unknown guard ' .. tostring(kind))
  end
  if not holds then return {'conflict', key} end
end
i = i + 1
local writes_at, writes = i, tonumber(argv[i])
for w = 1, writes do
  local kind = argv[i + 1]
  if kind ~= 'set' and kind ~= 'del' and kind ~= 'delif' and kind ~= 'zadd'
      and kind ~= 'zrem' then
    return redis.error_reply('ERR edge commit: unknown write ' .. tostring(kind))
  end
  i = i + 5
end
i = i + 1
local seq = 0
for e = 1, tonumber(argv[i]) do
  seq = redis.call('INCR', seq_key)
  redis.call('XADD', stream_key, 'MAXLEN', '~', maxlen, seq .. '-0', 'seq', seq,
    'type', argv[i + 1], 'data', argv[i + 2], 'at', argv[i + 3])
  i = i + 3
end
i = writes_at
for w = 1, writes do
  local kind, key, a, b, c = argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4], argv[i + 5]
  i = i + 5
  if kind == 'set' then
    if b == '0' then redis.call('SET', key, a) else redis.call('SET', key, a, 'PX', b) end
  elseif kind == 'del' then
    redis.call('DEL', key)
  elseif kind == 'delif' then
    if redis.call('GET', key) == a then redis.call('DEL', key) end
  elseif kind == 'zadd' then
    redis.call('ZADD', key, a, b)
    if c ~= '0' then
      local ttl = redis.call('PTTL', key)
      if ttl == -1 or ttl < tonumber(c) then redis.call('PEXPIRE', key, c) end
    end
  else
    redis.call('ZREM', key, a)
  end
end
redis.call('SET', argv[1], seq, 'PX', replay_ms)
return {'ok', seq}
