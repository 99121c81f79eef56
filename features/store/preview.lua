local function preview(KEYS, ARGV)
  local prior = redis.call('HGET', KEYS[1], ARGV[1])
  if prior then return prior end
  local saved = {}
  for k = 2, #KEYS do
    local ttl = redis.call('PTTL', KEYS[k])
    if ttl ~= -2 then saved[k] = {redis.call('DUMP', KEYS[k]), ttl} end
  end
  local reply = run(KEYS, ARGV)
  for k = 2, #KEYS do
    local kept = saved[k]
    if not kept then
      redis.call('DEL', KEYS[k])
    elseif redis.call('DUMP', KEYS[k]) ~= kept[1] then
      local ttl = kept[2]
      if ttl == -1 then ttl = 0 elseif ttl < 1 then ttl = 1 end
      redis.call('RESTORE', KEYS[k], ttl, kept[1], 'REPLACE')
    end
  end
  return reply
end
