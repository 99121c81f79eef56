local replies = {}
for c, call in ipairs(cjson.decode(ARGV[1])) do
  local reply = apply(call[1], call[2])
  if type(reply) == 'table' and reply.err then return reply end
  replies[c] = reply
end
return replies
