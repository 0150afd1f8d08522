-- ARGV: meta key, application, schema -> {application, schema}
redis.call('HSETNX', ARGV[1], 'application', ARGV[2])
redis.call('HSETNX', ARGV[1], 'schema', ARGV[3])
return redis.call('HMGET', ARGV[1], 'application', 'schema')
