-- A call's operations: its reply, the keys written with their TTL, and the memo TTL (or an error reply).
local function run(KEYS, ARGV)
  local a = cjson.decode(ARGV[2])
  local size = #a
  local ts_text, ttl, memo_ttl = a[1], a[2], a[3]
  local ts = tonumber(ts_text)
  local out = {}
  local written = {}
  local function fmt(v) return string.format('%.17g', v) end
  local function by_label_then_day(x, y)
    if string.sub(x, 1, 1) ~= string.sub(y, 1, 1) then return x < y end
    return tonumber(string.sub(x, 3)) < tonumber(string.sub(y, 3))
  end
  local i = 4
  while i <= size do
    local code, index, count = a[i], tonumber(a[i + 1]), tonumber(a[i + 2])
    local q = i + 2
    i = i + 3 + count
    local key = KEYS[index]
    if code == 'W' then
      local bucket, n = tonumber(a[q + 1]), tonumber(a[q + 2])
      -- One read of the hash: the newest bucket first, then stale buckets and the total. A
      -- stale bucket is older than any the window counts, and the event's own bucket is new.
      local all = redis.call('HGETALL', key)
      local buckets = {}
      local newest = bucket
      for j = 1, #all, 2 do
        local f = tonumber(all[j])
        buckets[j] = f
        if f > newest then newest = f end
      end
      local oldest = newest - n + 1
      local total = 0
      if bucket >= oldest then
        redis.call('HINCRBY', key, a[q + 1], 1)
        total = 1
      end
      local stale = {}
      for j = 1, #all, 2 do
        local f = buckets[j]
        if f < oldest then
          stale[#stale + 1] = all[j]
        elseif f > bucket - n and f <= bucket then
          total = total + tonumber(all[j + 1])
        end
      end
      if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
      out[#out + 1] = fmt(total)
      written[key] = ttl
    elseif code == 'D' then
      local bucket, width, half_life = tonumber(a[q + 1]), tonumber(a[q + 2]), tonumber(a[q + 3])
      local all = redis.call('HGETALL', key)
      local buckets = {}
      local counts = {}
      for j = 1, #all, 2 do
        local f = tonumber(all[j])
        buckets[#buckets + 1] = f
        counts[f] = tonumber(all[j + 1])
      end
      table.sort(buckets)
      local total = 0.0
      for _, f in ipairs(buckets) do
        if f <= bucket then total = total + counts[f] * 2 ^ (-(ts - f * width) / half_life) end
      end
      out[#out + 1] = fmt(total)
    elseif code == 'H' then
      local n, first, m = tonumber(a[q + 1]), tonumber(a[q + 2]), tonumber(a[q + 3])
      redis.call('PFADD', key, unpack(ARGV, first, first + m - 1))
      out[#out + 1] = fmt(redis.call('PFCOUNT', unpack(KEYS, index, index + n - 1)))
      written[key] = ttl
    elseif code == 'F' then
      local first = redis.call('GET', key)
      if (not first) or ts < tonumber(first) then
        redis.call('SET', key, ts_text)
        first = ts_text
      end
      out[#out + 1] = fmt((ts - tonumber(first)) / 3600.0)
      written[key] = ttl
    elseif code == 'N' or code == 'Y' then
      local first, m = tonumber(a[q + 1]), tonumber(a[q + 2])
      local share = 0.0
      if m > 0 then
        local hits = 0
        local members = redis.call('SMISMEMBER', key, unpack(ARGV, first, first + m - 1))
        for _, member in ipairs(members) do hits = hits + member end
        if code == 'N' then share = (m - hits) / m else share = hits / m end
        if code == 'N' then
          redis.call('SADD', key, unpack(ARGV, first, first + m - 1))
          written[key] = ttl
        end
      end
      out[#out + 1] = fmt(share)
    elseif code == 'A' then
      local first, m = tonumber(a[q + 1]), tonumber(a[q + 2])
      if m > 0 then
        redis.call('SADD', key, unpack(ARGV, first, first + m - 1))
        written[key] = ttl
      end
    elseif code == 'R' or code == 'S' then
      local day, days, half_life = tonumber(a[q + 1]), tonumber(a[q + 2]), tonumber(a[q + 3])
      local all = redis.call('HGETALL', key)
      local fields = {}
      local weights = {}
      for j = 1, #all, 2 do
        fields[#fields + 1] = all[j]
        weights[all[j]] = tonumber(all[j + 1])
      end
      table.sort(fields, by_label_then_day)
      local w = {a = 0.0, l = 0.0}
      for _, f in ipairs(fields) do
        local d = tonumber(string.sub(f, 3))
        if d > day - days and d <= day then
          local label = string.sub(f, 1, 1)
          w[label] = w[label] + weights[f] * 2 ^ (-(day - d) / half_life)
        end
      end
      if code == 'R' then out[#out + 1] = fmt(w.a) else out[#out + 1] = fmt(w.a / (w.a + w.l + 1.0)) end
    elseif code == 'K' then
      local day, label, weight, days = tonumber(a[q + 1]), a[q + 2], a[q + 3], tonumber(a[q + 4])
      local fields = redis.call('HKEYS', key)
      local newest = day
      for _, f in ipairs(fields) do
        local d = tonumber(string.sub(f, 3))
        if d > newest then newest = d end
      end
      if day > newest - days then
        -- Added here in double precision (HINCRBYFLOAT adds in long double), so Redis and the
        -- reference interpreter hold the very same sum.
        local field = label .. ':' .. a[q + 1]
        local sum = (tonumber(redis.call('HGET', key, field)) or 0) + tonumber(weight)
        redis.call('HSET', key, field, string.format('%.17g', sum))
      end
      for _, f in ipairs(fields) do
        if tonumber(string.sub(f, 3)) <= newest - days then redis.call('HDEL', key, f) end
      end
      written[key] = ttl
    elseif code == 'E' then
      for j = 1, count do out[#out + 1] = fmt(tonumber(a[q + j])) end
    else
      return redis.error_reply('unknown operation ' .. tostring(code))
    end
  end
  return table.concat(out, ','), written, memo_ttl
end

-- Once per memo field: the first run's reply is remembered and served to every later one.
local function apply(KEYS, ARGV)
  local prior = redis.call('HGET', KEYS[1], ARGV[1])
  if prior then return prior end
  local reply, written, memo_ttl = run(KEYS, ARGV)
  if type(reply) == 'table' then return reply end
  redis.call('HSET', KEYS[1], ARGV[1], reply)
  redis.call('EXPIRE', KEYS[1], memo_ttl)
  for key, seconds in pairs(written) do redis.call('EXPIRE', key, seconds) end
  return reply
end
