-- bench/wrk_post.lua -- wrk script for bench.py: POST the body in $WRK_BODY as JSON.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
