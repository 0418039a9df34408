# Shared by scripts/bench-proxy and scripts/failure-under-load (sourced, not run): free ports,
# processes in their own process groups that die with the script, readiness, peak memory, and
# the nginx.conf / haproxy.cfg both scripts use. Everything listens on 127.0.0.1 only.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/appliance-bench.XXXXXX")"
PIDS=()

# Stops every process group we started (TERM, then KILL after 5 s) and removes the work dir.
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop "$pid"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port that was free a moment ago on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# spawn LOG COMMAND...: starts COMMAND in its own session (so its workers can be stopped with
# it), output to LOG. Sets LAST_PID.
spawn() {
  local log="$1"
  shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# stop PID: TERM to its process group, KILL after 5 s.
stop() {
  local pid="$1" i
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# wait_port PORT PID NAME LOG: until 127.0.0.1:PORT accepts; fails (showing LOG) if PID dies or
# 20 s pass.
wait_port() {
  local port="$1" pid="$2" name="$3" log="$4" i
  for i in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited before listening on $port:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$name is not listening on $port after 20 s" >&2
  tail -n 20 "$log" >&2
  exit 1
}

# peak_rss_mb PID: the peak resident set (VmHWM) summed over the process group, in MB. For
# nginx that is the master and its workers.
peak_rss_mb() {
  local pid="$1" p total=0 kb
  for p in $(pgrep -g "$pid"); do
    kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  awk -v kb="$total" 'BEGIN { printf "%.1f", kb / 1024 }'
}

# The appliance to measure: $APPLIANCE_BIN, else target/release/appliance. Sets APPLIANCE to its
# path, or to "" and APPLIANCE_MISSING to the reason.
find_appliance() {
  APPLIANCE="${APPLIANCE_BIN:-$REPO/target/release/appliance}"
  APPLIANCE_MISSING=""
  if [ ! -x "$APPLIANCE" ]; then
    APPLIANCE_MISSING="$APPLIANCE is not built (cargo build --release, or set APPLIANCE_BIN)"
    APPLIANCE=""
  elif ! "$APPLIANCE" run --help >/dev/null 2>&1; then
    APPLIANCE_MISSING="$APPLIANCE has no \`run\` subcommand yet"
    APPLIANCE=""
  fi
}

# backend_conf FILE WORKERS BODY PORT...: an nginx answering `return 200 BODY` on each port
# (text/plain, or $BACKEND_TYPE), keeping client connections open for the whole run; and
# `/auth` with a 204, as an authentication service answers auth_request's subrequests
# (oauth2-proxy answers 202 with no body).
backend_conf() {
  local file="$1" workers="$2" body="$3" port
  shift 3
  {
    echo "worker_processes $workers;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    echo "    access_log off;"
    echo "    keepalive_requests 1000000;"
    echo "    server {"
    for port in "$@"; do echo "        listen 127.0.0.1:$port;"; done
    echo "        location / { default_type ${BACKEND_TYPE:-text/plain}; return 200 \"$body\"; }"
    echo "        location = /auth { return 204; }"
    echo "    }"
    echo "}"
  } >"$file"
}

# proxy_conf FILE WORKERS LISTEN_PORT KEEPALIVE BACKEND_PORT...: the nginx.conf that nginx and
# the appliance both run. KEEPALIVE > 0 pools that many idle upstream connections (HTTP/1.1,
# empty Connection header); 0 keeps nginx's defaults (HTTP/1.0, a connection per request).
# With PIN_WORKERS=1, each worker is pinned to a CPU of its own (worker_cpu_affinity auto).
# With REWRITE_RULES=1, the server and location run rewrite-module directives on every request,
# as configs in the field do: a server-level `if` that redirects plain-HTTP traffic marked by a
# front balancer (false for these requests) and a location `rewrite ... break` to the same URI.
# With LIMIT_RULES=1, the location applies a per-client `limit_req` and `limit_conn` to every
# request, at limits the load stays far below (nothing is delayed or refused): the cost of
# keeping the counts.
# With HTTP_LOG=1, every request is written to an access log beside the config, in nginx's
# default `combined` format, as Debian's nginx.conf has it (HAProxy, which logs through syslog,
# is left without one).
# With HEADER_RULES=1, the server adds the response headers configs in the field set at that
# level (X-Frame-Options, X-Content-Type-Options, and Strict-Transport-Security `always`).
# With ERROR_PAGES=1, the server has nginx's usual error pages: 500, 502, 503 and 504 answered
# with /50x.html from a `root` location (never used here: nothing fails).
# With GZIP_RULES=1, the http level has `gzip on` as Debian's nginx.conf does.
# With SENDFILE=1, the http level has `sendfile on` as Debian's nginx.conf does.
# With SUB_FILTER=1, the location rewrites every `<p>item` of the backends' HTML with
# `sub_filter` (`sub_filter_once off`).
# With AUTH_REQUEST=1, the location asks the backends' /auth (auth_request, the way
# oauth2-proxy guides set it up) before every request: one subrequest per request.
# With STATIC_ROOT=DIR, the location serves files from DIR (`root`) instead of proxying: a
# request for `/` gets DIR/index.html through `index`.
# With STREAM_PROXY=1, the proxy is TCP instead (`stream {}`, Debian's dynamic stream module
# loaded): one upstream of the backends, round robin per connection, bytes passed through;
# with STREAM_PREREAD=1 too, the server reads the client's first bytes for a ClientHello
# (`ssl_preread on`), as an SNI router does, and goes where a map of
# `$ssl_preread_server_name` says (`proxy_pass $variable`; the HTTP clients here send no
# ClientHello, so every connection takes the map's default); with STREAM_LOG=1, every session
# is written to an access log beside the config, in the format of nginx's stream docs.
proxy_conf() {
  local file="$1" workers="$2" listen="$3" keepalive="$4" port
  shift 4
  if [ "${STREAM_PROXY:-0}" -ne 0 ]; then
    stream_conf "$file" "$workers" "$listen" "$@"
    return
  fi
  {
    echo "worker_processes $workers;"
    [ "${PIN_WORKERS:-0}" -eq 0 ] || echo "worker_cpu_affinity auto;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    if [ "${HTTP_LOG:-0}" -ne 0 ]; then
      echo "    access_log $(dirname "$file")/access.log;"
    else
      echo "    access_log off;"
    fi
    echo "    keepalive_requests 1000000;"
    [ "${GZIP_RULES:-0}" -eq 0 ] || echo "    gzip on;"
    [ "${SENDFILE:-0}" -eq 0 ] || echo "    sendfile on;"
    if [ "${LIMIT_RULES:-0}" -ne 0 ]; then
      echo "    limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000000r/s;"
      echo "    limit_conn_zone \$binary_remote_addr zone=addr:10m;"
    fi
    echo "    upstream backends {"
    for port in "$@"; do echo "        server 127.0.0.1:$port;"; done
    if [ "$keepalive" -gt 0 ]; then
      echo "        keepalive $keepalive;"
      echo "        keepalive_requests 1000000;"
    fi
    echo "    }"
    echo "    server {"
    echo "        listen 127.0.0.1:$listen;"
    if [ "${HEADER_RULES:-0}" -ne 0 ]; then
      echo "        add_header X-Frame-Options SAMEORIGIN;"
      echo "        add_header X-Content-Type-Options nosniff;"
      echo "        add_header Strict-Transport-Security \"max-age=31536000\" always;"
    fi
    if [ "${REWRITE_RULES:-0}" -ne 0 ]; then
      echo "        if (\$http_x_forwarded_proto = \"http\") { return 301 https://\$host\$request_uri; }"
    fi
    if [ "${ERROR_PAGES:-0}" -ne 0 ]; then
      echo "        error_page 500 502 503 504 /50x.html;"
      echo "        location = /50x.html { root /usr/share/nginx/html; }"
    fi
    if [ "${AUTH_REQUEST:-0}" -ne 0 ]; then
      echo "        location = /auth {"
      echo "            internal;"
      echo "            proxy_pass http://backends;"
      echo "            proxy_pass_request_body off;"
      echo "            proxy_set_header Content-Length \"\";"
      echo "            proxy_set_header X-Original-URI \$request_uri;"
      if [ "$keepalive" -gt 0 ]; then
        echo "            proxy_http_version 1.1;"
        echo "            proxy_set_header Connection \"\";"
      fi
      echo "        }"
    fi
    echo "        location / {"
    [ "${AUTH_REQUEST:-0}" -eq 0 ] || echo "            auth_request /auth;"
    if [ "${SUB_FILTER:-0}" -ne 0 ]; then
      echo "            sub_filter '<p>item' '<p class=\"i\">item';"
      echo "            sub_filter_once off;"
    fi
    [ "${REWRITE_RULES:-0}" -eq 0 ] || echo "            rewrite ^/(.*)\$ /\$1 break;"
    if [ "${LIMIT_RULES:-0}" -ne 0 ]; then
      echo "            limit_req zone=perip burst=1000 nodelay;"
      echo "            limit_conn addr 1000;"
    fi
    if [ -n "${STATIC_ROOT:-}" ]; then
      echo "            root $STATIC_ROOT;"
    else
      echo "            proxy_pass http://backends;"
    fi
    if [ "$keepalive" -gt 0 ]; then
      echo "            proxy_http_version 1.1;"
      echo "            proxy_set_header Connection \"\";"
    fi
    echo "        }"
    echo "    }"
    echo "}"
  } >"$file"
}

# stream_conf FILE WORKERS LISTEN_PORT BACKEND_PORT...: proxy_conf's TCP proxy.
stream_conf() {
  local file="$1" workers="$2" listen="$3" port
  shift 3
  {
    echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    echo "worker_processes $workers;"
    [ "${PIN_WORKERS:-0}" -eq 0 ] || echo "worker_cpu_affinity auto;"
    echo "events { worker_connections 4096; }"
    echo "stream {"
    if [ "${STREAM_LOG:-0}" -ne 0 ]; then
      echo "    log_format basic '\$remote_addr [\$time_local] \$protocol \$status \$bytes_sent \$bytes_received \$session_time';"
      echo "    access_log $(dirname "$file")/stream-access.log basic;"
    fi
    echo "    upstream backends {"
    for port in "$@"; do echo "        server 127.0.0.1:$port;"; done
    echo "    }"
    if [ "${STREAM_PREREAD:-0}" -ne 0 ]; then
      echo "    map \$ssl_preread_server_name \$route {"
      echo "        hostnames;"
      echo "        app.example.test backends;"
      echo "        default backends;"
      echo "    }"
    fi
    echo "    server {"
    echo "        listen 127.0.0.1:$listen;"
    if [ "${STREAM_PREREAD:-0}" -ne 0 ]; then
      echo "        ssl_preread on;"
      echo "        proxy_pass \$route;"
    else
      echo "        proxy_pass backends;"
    fi
    echo "    }"
    echo "}"
  } >"$file"
}

# haproxy_conf FILE THREADS LISTEN_PORT BACKEND_PORT...: the same proxy for HAProxy, reusing
# idle server connections for any request (the closest to nginx's keepalive pool), or TCP with
# STREAM_PROXY=1; with
# HEADER_RULES=1, setting the same response headers; with GZIP_RULES=1, compressing text/html. With
# PIN_WORKERS=1, thread N runs on CPU N-1 only, as nginx's `worker_cpu_affinity auto` does.
haproxy_conf() {
  local file="$1" threads="$2" listen="$3" port i=0
  shift 3
  {
    echo "global"
    echo "    nbthread $threads"
    [ "${PIN_WORKERS:-0}" -eq 0 ] || echo "    cpu-map auto:1/1-$threads 0-$((threads - 1))"
    echo "    maxconn 4096"
    echo "defaults"
    if [ "${STREAM_PROXY:-0}" -ne 0 ]; then
      # STREAM_PROXY=1: TCP, as proxy_conf's stream server (STREAM_PREREAD has no equivalent
      # here and is left out).
      echo "    mode tcp"
    else
      echo "    mode http"
      echo "    http-reuse always"
    fi
    echo "    timeout connect 5s"
    echo "    timeout client 60s"
    echo "    timeout server 60s"
    echo "frontend proxy"
    echo "    bind 127.0.0.1:$listen"
    if [ "${HEADER_RULES:-0}" -ne 0 ]; then
      echo "    http-response set-header X-Frame-Options SAMEORIGIN"
      echo "    http-response set-header X-Content-Type-Options nosniff"
      echo "    http-response set-header Strict-Transport-Security max-age=31536000"
    fi
    if [ "${GZIP_RULES:-0}" -ne 0 ]; then
      echo "    compression algo gzip"
      echo "    compression type text/html"
    fi
    echo "    default_backend backends"
    echo "backend backends"
    echo "    balance roundrobin"
    for port in "$@"; do
      i=$((i + 1))
      echo "    server b$i 127.0.0.1:$port"
    done
  } >"$file"
}

# start_nginx NAME CONF: nginx in the foreground with a master, its pid, logs and temp files
# in the work dir. Sets LAST_PID.
start_nginx() {
  local name="$1" conf="$2" dir="$WORK/$1"
  mkdir -p "$dir"
  spawn "$dir/stderr.log" nginx -p "$dir" -c "$conf" -e "$dir/error.log" \
    -g "daemon off; pid $dir/nginx.pid;"
}
