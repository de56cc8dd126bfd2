#!/usr/bin/env python3
"""Follow a cdp sidecar from a service that is not written for Node: Python's standard library only.

usage: subscriber.py URL APP [KEY]      e.g. subscriber.py http://127.0.0.1:7070 ticker interval
Set CDP_TOKEN when the sidecar asks for a bearer token.

Prints the current value, then one line per change. After a dropped connection it reconnects
with Last-Event-ID, and the sidecar sends every change it missed first: none is lost.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def get(url, headers):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
        return json.load(response), response.headers["ETag"].strip('"')


def events(url, headers, last):
    """Yield (event, data) from the event stream, from revision `last` on, for ever."""
    while True:
        try:
            request = urllib.request.Request(url, headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": last})
            with urllib.request.urlopen(request) as stream:
                event, data = "message", []
                for raw in stream:
                    line = raw.decode("utf-8").rstrip("\n")
                    if line.startswith("id: "):
                        last = line[4:]
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif line == "" and data:
                        yield event, json.loads("\n".join(data))
                        event, data = "message", []
            print(f"cdp: the event stream ended; reconnecting from revision {last}", file=sys.stderr, flush=True)
        except (OSError, urllib.error.URLError) as error:
            print(f"cdp: {error}; reconnecting from revision {last}", file=sys.stderr, flush=True)
        time.sleep(1)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    base, app = sys.argv[1].rstrip("/"), sys.argv[2]
    key = sys.argv[3] if len(sys.argv) == 4 else None
    token = os.environ.get("CDP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    name = f"{app}.{key}" if key else app
    value, revision = get(f"{base}/v1/config/{app}" + (f"/{key}" if key else ""), headers)
    print(f"{name} = {json.dumps(value)} (revision {revision})", flush=True)
    query = urllib.parse.urlencode({"app": app, **({"key": key} if key else {})})
    for event, data in events(f"{base}/v1/events?{query}", headers, revision):
        if event == "snapshot":
            print(f"{name}: reset to revision {data['revision']}: {json.dumps(data['apps'].get(app))}", flush=True)
        elif data.get("secret"):
            print(f"{data['app']}.{data['key']} changed (secret) at revision {data['revision']}", flush=True)
        else:
            print(f"{data['app']}.{data['key']} = {json.dumps(data['value'])} (was {json.dumps(data.get('previous'))}, revision {data['revision']}, from {data['source']})", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except urllib.error.HTTPError as error:
        sys.exit(f"cdp: {error.code}: {error.read().decode('utf-8', 'replace')}")
