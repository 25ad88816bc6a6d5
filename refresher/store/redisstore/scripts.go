package redisstore

import "github.com/redis/go-redis/v9"

// The Lua scripts below are the store's atomic steps. Every script touches
// only keys of one session (hash tag {sid}), so it runs on Redis Cluster.
// On a single primary (standalone or Sentinel) the scripts also take the
// keys outside the session's slot (token index, subject index, feed) as
// optional trailing KEYS, so each operation is one atomic script there;
// on Cluster those keys are written by separate commands, in an order that
// never loses a session or a revocation (see the Store methods).
//
// Times are fixed-width, order-preserving strings (see encodeTime), so Lua
// compares them as strings, exactly, without float rounding; "" is the
// zero time.

// feedLua appends one revocation to the feed stream, keeps the stream alive
// at least until the entry's until, and drops entries from the head whose
// until has passed (the feed is ordered by revocation time, and until is
// revocation time plus the same access-token lifetime, so the head is the
// oldest).
const feedLua = `
local function feed_append(key, sid, sub, untl, ttl, now)
  redis.call('XADD', key, '*', 'sid', sid, 'sub', sub, 'until', untl)
  if redis.call('PTTL', key) < tonumber(ttl) then
    redis.call('PEXPIRE', key, ttl)
  end
  local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 100)
  for _, e in ipairs(head) do
    local f = e[2]
    local u = ''
    for i = 1, #f, 2 do if f[i] == 'until' then u = f[i+1] end end
    if u > now then break end
    redis.call('XDEL', key, e[1])
  end
end
`

// Token records are fields of one hash per session (KEYS "tokens"): field
// = token hash, value = "generation|issued|expires|rotated|child hash".
// One field costs about half of a key of its own, and a session keeps a
// record per rotation until it ends.

// createScript: KEYS session, tokens, claims, [index of first token,
// subject index]. ARGV sid, sub, claims, created, idle, exp, token hash,
// iat, token exp, ttl ms, DPoP key thumbprint, device hash (the last two
// "" for none: the fields 'jkt' and 'dev' are then left out, as in
// sessions created before DPoP binding existed). Returns 1 created, 0 exists. Creating the same
// session with the same first token again is success, so a retried call is
// harmless. Claims live in their own string key: a hash with a value over
// hash-max-listpack-value (64 bytes by default) loses Redis's compact
// encoding, and claims are usually longer than that.
var createScript = redis.NewScript(`
local s = redis.call('HMGET', KEYS[1], 'cur', 'created')
if s[1] then
  if s[1] == ARGV[7] and s[2] == ARGV[4] then return 1 end
  return 0
end
if KEYS[4] then
  if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', ARGV[10]) then return 0 end
  redis.call('HSET', KEYS[5], ARGV[1], '1')
  if redis.call('PTTL', KEYS[5]) < tonumber(ARGV[10]) then redis.call('PEXPIRE', KEYS[5], ARGV[10]) end
end
redis.call('HSET', KEYS[1], 'sub', ARGV[2], 'created', ARGV[4], 'idle', ARGV[5],
  'exp', ARGV[6], 'rev', '', 'gen', '0', 'cur', ARGV[7])
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'jkt', ARGV[11]) end
if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'dev', ARGV[12]) end
redis.call('PEXPIRE', KEYS[1], ARGV[10])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[10])
redis.call('HSET', KEYS[2], ARGV[7], '0|' .. ARGV[8] .. '|' .. ARGV[9] .. '||')
redis.call('PEXPIRE', KEYS[2], ARGV[10])
return 1
`)

// Outcome codes returned by rotateScript (store.Outcome values).
const (
	codeRotated  = 1
	codeReplayed = 2
	codeReuse    = 3
	codeUnknown  = 4
	codeExpired  = 5
	codeRevoked  = 6
	// codeLate: the script ran after the caller's deadline and did nothing
	// (see clock.go); not a store.Outcome.
	codeLate = 7
	// codeKeyMismatch: store.KeyMismatch (the session is bound to another
	// DPoP key); nothing written.
	codeKeyMismatch = 8
	// codeStale: the rotation would have taken place but the session is not
	// what the caller's snapshot says (store.ErrStale); nothing written.
	codeStale = 9
)

// rotateScript is the whole Rotate decision table (store.Store.Rotate) in
// one step. It is the one backend that does not call store.Apply: the
// decision must run inside Redis to be atomic in one round trip. The
// conformance suite (storetest), which an independent in-test reference
// store passes too, holds it to the same answers and writes. KEYS session, tokens, parent's sealed pair, claims, [feed,
// child's index]. ARGV now, grace cutoff (now-grace), child hash, child
// iat, child exp, sealed, sealed ttl ms, revoke until, feed ttl ms, parent
// hash, sid, deadline (microseconds on Redis's clock, "" for none), the
// request's DPoP key thumbprint ("" for none), and, for a rotation minted
// from a snapshot of the session (RotateIfCurrent), the snapshot's session
// generation and claims: where the decision is to rotate, a session whose
// 'gen' or claims differ is left unchanged and the answer is 9 (stale);
// a rotation from a current snapshot answers without the session fields
// and claims (false), which the caller has.
// Returns {code, session fields, parent record, sealed or false, session
// pttl ms, claims, TIME seconds, TIME microseconds}, or {4 (unknown), 7
// (late: past the deadline, nothing read or written) or 9 (stale), TIME
// seconds, TIME microseconds}.
var rotateScript = redis.NewScript(feedLua + `
local t = redis.call('TIME')
if ARGV[12] ~= '' and tonumber(t[1]) * 1000000 + tonumber(t[2]) > tonumber(ARGV[12]) then
  return {7, t[1], t[2]}
end
local now = ARGV[1]
local s = redis.call('HMGET', KEYS[1], 'rev', 'exp', 'cur', 'sub', 'jkt', 'gen')
local jkt = s[5] or ''
local rec = redis.call('HGET', KEYS[2], ARGV[10])
if not s[2] or not rec then return {4, t[1], t[2]} end
local gen, iat, exp, rot, child = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
local code
local sealed = false
if s[1] ~= '' then
  code = 6
elseif now >= s[2] then
  code = 5
elseif jkt ~= '' and jkt ~= ARGV[13] then
  code = 8
elseif rot ~= '' then
  if ARGV[2] < rot and child == s[3] then
    code = 2
    sealed = redis.call('GET', KEYS[3])
  else
    code = 3
    redis.call('HSET', KEYS[1], 'rev', now)
    if KEYS[5] then
      feed_append(KEYS[5], ARGV[11], s[4], ARGV[8], ARGV[9], now)
      redis.call('HSET', KEYS[1], 'fed', '1')
    end
  end
elseif now >= exp then
  code = 5
else
  code = 1
  if ARGV[14] and (s[6] ~= ARGV[14] or (redis.call('GET', KEYS[4]) or '') ~= ARGV[15]) then
    return {9, t[1], t[2]}
  end
  local ttl = redis.call('PTTL', KEYS[1])
  rec = gen .. '|' .. iat .. '|' .. exp .. '|' .. now .. '|' .. ARGV[3]
  redis.call('HSET', KEYS[2], ARGV[10], rec,
    ARGV[3], tostring(tonumber(gen) + 1) .. '|' .. ARGV[4] .. '|' .. ARGV[5] .. '||')
  redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'gen', 1)
  redis.call('HSET', KEYS[1], 'cur', ARGV[3])
  if jkt == '' and ARGV[13] ~= '' then redis.call('HSET', KEYS[1], 'jkt', ARGV[13]) end
  if KEYS[6] then redis.call('SET', KEYS[6], ARGV[11], 'PX', ttl) end
  if ARGV[14] then return {code, false, rec, false, ttl, false, t[1], t[2]} end
end
return {code, redis.call('HGETALL', KEYS[1]), rec, sealed, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[4]), t[1], t[2]}
`)

// revokeScript: KEYS session, [feed]. ARGV now, until, feed ttl ms,
// only-if-active ("1"/"0"), sid. Returns {code, subject, fed}: code -1 no
// such session, 0 already revoked, 1 revoked now, 2 not active (expired;
// only with only-if-active). fed is "1" once the revocation is on the feed
// (Cluster appends it in a second step and marks it with markFedScript).
var revokeScript = redis.NewScript(feedLua + `
local s = redis.call('HMGET', KEYS[1], 'rev', 'exp', 'sub', 'fed')
if not s[2] then return {-1, '', ''} end
if s[1] ~= '' then return {0, s[3], s[4] or ''} end
if ARGV[4] == '1' and ARGV[1] >= s[2] then return {2, s[3], ''} end
redis.call('HSET', KEYS[1], 'rev', ARGV[1])
if KEYS[2] then
  feed_append(KEYS[2], ARGV[5], s[3], ARGV[2], ARGV[3], ARGV[1])
  redis.call('HSET', KEYS[1], 'fed', '1')
  return {1, s[3], '1'}
end
return {1, s[3], ''}
`)

// markFedScript records that a session's revocation reached the feed
// (Cluster). KEYS session. It never recreates an expired session.
var markFedScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'fed', '1') end
return 1
`)

// appendScript: the feed append on its own (Cluster, where the feed lives
// in another slot than the session). KEYS feed. ARGV sid, sub, until, ttl
// ms, now.
var appendScript = redis.NewScript(feedLua + `
feed_append(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
`)

// patchScript: KEYS session, claims. ARGV claims, now. Returns {session
// fields, claims}, or false if the session does not exist or is not active
// at now.
var patchScript = redis.NewScript(`
local s = redis.call('HMGET', KEYS[1], 'rev', 'exp')
if not s[2] or s[1] ~= '' or ARGV[2] >= s[2] then return false end
redis.call('SET', KEYS[2], ARGV[1], 'KEEPTTL')
return {redis.call('HGETALL', KEYS[1]), ARGV[1]}
`)

// indexScript: the subject index on its own (Cluster). KEYS subject index
// (a hash of sid → "1": small hashes keep Redis's compact encoding, small
// sets of strings do not before Redis 7.2). ARGV sid, ttl ms. The index
// lives as long as its longest session.
var indexScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], '1')
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`)
