-- ARGV: index key, record key prefix -> {index value, record} or {}.
local id = redis.call('GET', ARGV[1])
if not id then return {} end
return {id, redis.call('GET', ARGV[2] .. id)}
