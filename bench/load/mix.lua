-- bench/load/mix.lua -- the request mix of bench/load/run.sh, for wrk (LuaJIT).
--
-- wrk is run with as many threads as connections (-t N -c N), so every wrk thread owns exactly
-- one keep-alive connection. setup() gives each thread one request kind (and, for the writing
-- kinds, its own model), so:
--   * a training or step stream never overlaps itself on a model: no 409 by construction;
--   * request() and response() of a thread pair up exactly, so each thread times its own
--     requests (clock_gettime through the FFI) and counts statuses per kind, which wrk alone
--     cannot do (its latency statistics are for the whole run).
--
-- Environment (set by run.sh):
--   LOAD_LAYOUT   "kind=connections,...", summing to the -c value; kinds are listed in `kinds`
--   LOAD_TINY, LOAD_MLP            model ids for predict_tiny / predict_mlp
--   LOAD_STEP, LOAD_TRAIN          comma-separated model ids, one per step / train connection
--   LOAD_READ                      comma-separated model ids that the GET kinds rotate over
--   LOAD_PARAMS                    comma-separated model ids for GET .../parameters
--   LOAD_OUT                       file that done() writes its machine-readable summary to

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } load_timespec;
int clock_gettime(int clk_id, load_timespec *tp);
]]
local ts = ffi.new("load_timespec")
local function now_us()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local function ids(var)
    local t = {}
    for id in string.gmatch(os.getenv(var) or "", "%d+") do t[#t + 1] = id end
    return t
end

local kinds = {"predict_tiny", "predict_mlp", "step", "train",
               "get_model", "history", "parameters", "healthz"}

-- ---------------------------------------------------------------- main state: setup / done

local threads = {}
local slots = nil      -- slots[i] = kind of the i-th thread, from LOAD_LAYOUT
local per_kind = {}    -- threads seen so far of each kind

function setup(thread)
    if slots == nil then
        slots = {}
        for kind, n in string.gmatch(os.getenv("LOAD_LAYOUT") or "", "([%w_]+)=(%d+)") do
            for _ = 1, tonumber(n) do slots[#slots + 1] = kind end
        end
    end
    local i = #threads + 1
    local kind = slots[i] or "healthz"
    per_kind[kind] = (per_kind[kind] or 0) + 1
    thread:set("kind", kind)
    thread:set("nth", per_kind[kind])  -- 1-based index among the threads of this kind
    thread:set("tid", i)
    threads[i] = thread
end

-- Percentile of a {bucket_us -> count} histogram (nearest rank over sorted buckets).
local function percentiles(hist, total, ps)
    local keys = {}
    for k in pairs(hist) do keys[#keys + 1] = k end
    table.sort(keys)
    local out, acc, j = {}, 0, 1
    for _, k in ipairs(keys) do
        acc = acc + hist[k]
        while j <= #ps and acc >= math.ceil(ps[j] / 100 * total) do
            out[j] = k
            j = j + 1
        end
    end
    while j <= #ps do out[j] = keys[#keys] or 0; j = j + 1 end
    return out
end

function done(summary, latency, requests)
    local f = assert(io.open(os.getenv("LOAD_OUT") or "/dev/stdout", "w"))
    local dur = summary.duration / 1e6
    local e = summary.errors
    f:write(string.format("duration_s %.3f\n", dur))
    f:write(string.format("requests %d\n", summary.requests))
    f:write(string.format("bytes %d\n", summary.bytes))
    f:write(string.format("socket_errors connect=%d read=%d write=%d timeout=%d\n",
                          e.connect, e.read, e.write, e.timeout))
    -- wrk's own latency statistics (µs): the whole mix.
    f:write(string.format("wrk_latency_ms p50=%.3f p90=%.3f p99=%.3f max=%.3f mean=%.3f\n",
                          latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
                          latency:percentile(99) / 1e3, latency.max / 1e3, latency.mean / 1e3))
    local agg, all_hist, all_n, all_max = {}, {}, 0, 0
    local status_all, streams = {}, {}
    for _, t in ipairs(threads) do
        local kind = t:get("kind")
        local a = agg[kind]
        if a == nil then
            a = {conns = 0, n = 0, max = 0, hist = {}, status = {}}
            agg[kind] = a
        end
        a.conns = a.conns + 1
        a.n = a.n + (t:get("nresp") or 0)
        local mx = t:get("maxlat") or 0
        if mx > a.max then a.max = mx end
        if mx > all_max then all_max = mx end
        for k, c in pairs(t:get("hist") or {}) do
            a.hist[k] = (a.hist[k] or 0) + c
            all_hist[k] = (all_hist[k] or 0) + c
        end
        for s, c in pairs(t:get("counts") or {}) do
            a.status[s] = (a.status[s] or 0) + c
            status_all[s] = (status_all[s] or 0) + c
        end
        if kind == "step" or kind == "train" then
            local ok = 0
            for s, c in pairs(t:get("counts") or {}) do
                if s >= 200 and s < 300 then ok = ok + c end
            end
            streams[#streams + 1] = string.format("stream %s %d %d\n", kind, t:get("nth"), ok)
        end
        local fe = t:get("firsterr")
        if fe ~= nil and a.firsterr == nil then a.firsterr = fe end
        all_n = all_n + (t:get("nresp") or 0)
    end
    local ps = {50, 90, 99}
    local q = percentiles(all_hist, all_n, ps)
    f:write(string.format("overall conns=%d n=%d rps=%.1f p50=%.3f p90=%.3f p99=%.3f max=%.3f\n",
                          #threads, all_n, all_n / dur, q[1] / 1e3, q[2] / 1e3, q[3] / 1e3,
                          all_max / 1e3))
    for _, kind in ipairs(kinds) do
        local a = agg[kind]
        if a ~= nil then
            local kq = percentiles(a.hist, a.n, ps)
            f:write(string.format("kind %s conns=%d n=%d rps=%.1f p50=%.3f p90=%.3f p99=%.3f max=%.3f\n",
                                  kind, a.conns, a.n, a.n / dur, kq[1] / 1e3, kq[2] / 1e3,
                                  kq[3] / 1e3, a.max / 1e3))
            local codes = {}
            for s in pairs(a.status) do codes[#codes + 1] = s end
            table.sort(codes)
            for _, s in ipairs(codes) do
                f:write(string.format("kind_status %s %d %d\n", kind, s, a.status[s]))
            end
            if a.firsterr ~= nil then
                f:write(string.format("first_error %s %s\n", kind, a.firsterr))
            end
        end
    end
    local codes = {}
    for s in pairs(status_all) do codes[#codes + 1] = s end
    table.sort(codes)
    for _, s in ipairs(codes) do
        f:write(string.format("status %d %d\n", s, status_all[s]))
    end
    -- Successful calls of each step / train connection (one model each), for run.sh's check
    -- that the models' step counters account for every update.
    for _, line in ipairs(streams) do f:write(line) end
    if f ~= io.stdout then f:close() end
end

-- ---------------------------------------------------------------- thread states

local req            -- the request(s) this thread sends
local nreq = 0
local t0 = nil
-- globals read by done() through thread:get()
counts, hist, nresp, maxlat, firsterr = {}, {}, 0, 0, nil

-- A JSON matrix of `rows` x `cols` numbers in [-1, 1], and the linear targets y = x·w.
local function matrix(rows, cols, w)
    local xr, ys = {}, {}
    for r = 1, rows do
        local v, s = {}, 0
        for c = 1, cols do
            local x = math.random() * 2 - 1
            v[c] = string.format("%.4f", x)
            if w then s = s + x * w[c] end
        end
        xr[r] = "[" .. table.concat(v, ",") .. "]"
        ys[r] = string.format("%.4f", s)
    end
    return "[" .. table.concat(xr, ",") .. "]", "[" .. table.concat(ys, ",") .. "]"
end

local json = {["Content-Type"] = "application/json"}

function init(args)
    math.randomseed(1000 + tid)
    local function pick(var, n)
        local t = ids(var)
        assert(#t > 0, var .. " is empty")
        return t[(n - 1) % #t + 1]
    end
    req = {}
    if kind == "predict_tiny" or kind == "predict_mlp" then
        local id = kind == "predict_tiny" and pick("LOAD_TINY", 1) or pick("LOAD_MLP", 1)
        local rows, cols = 4, 2
        if kind == "predict_mlp" then rows, cols = 16, 32 end
        for i = 1, 8 do   -- a few different inputs, rotated
            local x = matrix(rows, cols)
            req[i] = wrk.format("POST", "/v1/models/" .. id .. "/predict", json,
                                '{"x":' .. x .. '}')
        end
    elseif kind == "step" then
        local id = pick("LOAD_STEP", nth)   -- this connection's own model
        local w = {0.5, -0.25, 0.75, 0.1, -0.6, 0.3, 0.2, -0.4}
        for i = 1, 4 do
            local x, y = matrix(32, 8, w)
            req[i] = wrk.format("POST", "/v1/models/" .. id .. "/step", json,
                                '{"x":' .. x .. ',"y":' .. y .. '}')
        end
    elseif kind == "train" then
        local id = pick("LOAD_TRAIN", nth)  -- this connection's own model
        req[1] = wrk.format("POST", "/v1/models/" .. id .. "/train", json, '{"steps":5}')
    elseif kind == "get_model" or kind == "history" then
        for _, id in ipairs(ids("LOAD_READ")) do
            local path = "/v1/models/" .. id
            if kind == "history" then path = path .. "/history?limit=100" end
            req[#req + 1] = wrk.format("GET", path)
        end
    elseif kind == "parameters" then
        for _, id in ipairs(ids("LOAD_PARAMS")) do
            req[#req + 1] = wrk.format("GET", "/v1/models/" .. id .. "/parameters")
        end
    else
        req[1] = wrk.format("GET", "/healthz")
    end
    assert(#req > 0, "no request for kind " .. tostring(kind))
end

function request()
    nreq = nreq + 1
    t0 = now_us()
    return req[(nreq - 1) % #req + 1]
end

function response(status, headers, body)
    local us = now_us() - (t0 or now_us())
    nresp = nresp + 1
    counts[status] = (counts[status] or 0) + 1
    if us > maxlat then maxlat = us end
    -- Bucket to three significant digits (1 µs below 1 ms): percentiles within 1%.
    local b = math.floor(us)
    if b >= 1000 then
        local p = 10 ^ (math.floor(math.log10(b)) - 2)
        b = math.floor(b / p + 0.5) * p
    end
    hist[b] = (hist[b] or 0) + 1
    if (status < 200 or status >= 300) and firsterr == nil then
        firsterr = status .. " " .. string.sub(string.gsub(body, "%s+", " "), 1, 300)
    end
end
