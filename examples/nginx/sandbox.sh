#!/usr/bin/env bash
# Try the nginx example from a checkout without touching /etc: everything goes under PREFIX
# (default /tmp/cdp-nginx) and nginx listens on 127.0.0.1:PORT (default 8088). It writes the
# schema, a render file and a template whose paths point there, initialises a data directory,
# and prints the commands to run next. Needs nginx (Debian: apt-get install nginx-light) and curl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=${PREFIX:-/tmp/cdp-nginx}
port=${PORT:-8088}
cdp=${CDP:-npx cdp}

mkdir -p "$prefix/schemas" "$prefix/conf" "$prefix/logs" "$prefix/temp" "$prefix/web"
cp "$here/web.schema.json" "$prefix/schemas/"

# The same template, with nginx's own files under the prefix (pid, logs, temporary files) and the port.
temp_paths=""
for name in client_body proxy fastcgi uwsgi scgi; do temp_paths="$temp_paths ${name}_temp_path $prefix/temp/$name;"; done
sed -e '/^user /d' \
  -e "s#/run/nginx.pid#$prefix/nginx.pid#" \
  -e "s#/var/log/nginx/#$prefix/logs/#g" \
  -e "s#listen 127.0.0.1:8080#listen 127.0.0.1:$port#" \
  -e "s#^http {#http {\n   $temp_paths#" \
  "$here/nginx.conf.tmpl" >"$prefix/nginx.conf.tmpl"

cat >"$prefix/render.json" <<EOF
{
  "targets": [
    {
      "app": "web",
      "template": "nginx.conf.tmpl",
      "dest": "$prefix/conf/nginx.conf",
      "check": ["nginx", "-t", "-q", "-c", "{staged}"],
      "reload": ["nginx", "-s", "reload", "-c", "{dest}"],
      "health": ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:$port/healthz"],
      "healthTimeoutMs": 5000
    },
    { "app": "web", "format": "json", "dest": "$prefix/web/config.json" }
  ]
}
EOF

$cdp init --dir "$prefix/data" --schemas "$prefix/schemas" >/dev/null
cat <<EOF
Set up in $prefix. Next, from this checkout:
  $cdp watch --dir $prefix/data --render $prefix/render.json &     # writes $prefix/conf/nginx.conf
  nginx -c $prefix/conf/nginx.conf                                  # start nginx on its file
  curl http://127.0.0.1:$port/hello
  $cdp push --dir $prefix/data web:greeting:bonjour                 # nginx is checked, reloaded, probed
  curl http://127.0.0.1:$port/hello
  $cdp push --dir $prefix/data 'web:greeting:x"; } location /leak/ { alias /etc/; } location /y { return 200 "y'   # rejected by the schema
Stop with: nginx -s stop -c $prefix/conf/nginx.conf; kill %1
EOF
