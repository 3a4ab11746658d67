#!/usr/bin/env python3
"""notes-pg web service: a tiny notes app on PostgreSQL (standard library + psycopg2).

Env: DB_HOST (default "db"), DB_PORT (5432), DB_USER (postgres), DB_NAME (notes),
DB_PASSWORD (required), APP_VERSION (set by the image), PORT (8080).
Routes: GET / (HTML), POST /notes (form field `body` or a text/plain body; 303 to /),
GET /api/notes (JSON), GET /health (200 "ok" when `SELECT 1` works, else 503).
Each request opens its own short connection: nothing pins the database between requests, so
it can restart (or shut down) under the web service, and no pool has to notice.
"""

import html
import json
import os
import signal
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

VERSION = os.environ.get("APP_VERSION", "dev")
LISTEN_PORT = int(os.environ.get("PORT", "8080"))
MAX_BODY = 64 * 1024
STARTUP_WAIT_S = 60

DB = {
    "host": os.environ.get("DB_HOST", "db"),
    "port": int(os.environ.get("DB_PORT", "5432")),
    "user": os.environ.get("DB_USER", "postgres"),
    "dbname": os.environ.get("DB_NAME", "notes"),
    "password": os.environ.get("DB_PASSWORD", ""),
    "connect_timeout": 3,
    "application_name": "notes-pg-web",
}

SCHEMA = """CREATE TABLE IF NOT EXISTS notes (
    id serial PRIMARY KEY,
    body text NOT NULL,
    created timestamptz DEFAULT now()
)"""


def log(msg):
    print(f"notes-pg-web: {msg}", file=sys.stderr, flush=True)


def where():
    """The database's address for messages: never the password."""
    return f"{DB['user']}@{DB['host']}:{DB['port']}/{DB['dbname']}"


def connect():
    return psycopg2.connect(**DB)


def query(sql, args=(), fetch=True):
    conn = connect()
    try:
        with conn:  # commits, or rolls back on an exception
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if fetch else None
    finally:
        conn.close()


def wait_for_db():
    """Retries for up to STARTUP_WAIT_S, then creates the table if missing."""
    deadline = time.monotonic() + STARTUP_WAIT_S
    while True:
        try:
            query(SCHEMA, fetch=False)
            log(f"database {where()} ready")
            return
        except psycopg2.Error as e:
            if time.monotonic() >= deadline:
                log(f"giving up on {where()} after {STARTUP_WAIT_S}s: {first_line(e)}")
                sys.exit(1)
            log(f"waiting for {where()}: {first_line(e)}")
            time.sleep(2)


def first_line(e):
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Notes</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}
li{{margin:.4em 0}} small{{color:#777}}</style></head>
<body><h1>Notes <small>(version {version})</small></h1>
<form method="post" action="/notes">
<textarea name="body" rows="3" cols="50" required></textarea><br>
<button type="submit">Add note</button></form>
<ul>
{items}
</ul></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "notes-pg/" + VERSION
    protocol_version = "HTTP/1.1"

    def send(self, code, body, ctype="text/plain; charset=utf-8", headers=()):
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def db_error(self, e):
        log(f"{self.command} {self.path}: database error: {first_line(e)}")
        self.send(503, "database unavailable\n")

    def notes(self):
        return query("SELECT id, body, created FROM notes ORDER BY created DESC, id DESC")

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health":
            try:
                ok = query("SELECT 1") == [(1,)]
            except psycopg2.Error as e:
                log(f"health: {first_line(e)}")
                ok = False
            self.send(200, "ok\n") if ok else self.send(503, "database unavailable\n")
        elif path == "/":
            try:
                rows = self.notes()
            except psycopg2.Error as e:
                return self.db_error(e)
            items = "\n".join(
                f'<li>{html.escape(body)} <small>#{nid}, {html.escape(created.isoformat(timespec="seconds"))}</small></li>'
                for nid, body, created in rows
            )
            self.send(200, PAGE.format(version=html.escape(VERSION), items=items), "text/html; charset=utf-8")
        elif path == "/api/notes":
            try:
                rows = self.notes()
            except psycopg2.Error as e:
                return self.db_error(e)
            out = [{"id": nid, "body": body, "created": created.isoformat()} for nid, body, created in rows]
            self.send(200, json.dumps(out, ensure_ascii=False) + "\n", "application/json")
        else:
            self.send(404, "not found\n")

    do_HEAD = do_GET

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/notes":
            return self.send(404, "not found\n")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return self.send(400, "bad Content-Length\n")
        if length < 0 or length > MAX_BODY:
            return self.send(413, "note too large\n")
        raw = self.rfile.read(length)
        ctype = self.headers.get_content_type()
        try:
            text = raw.decode(self.headers.get_content_charset() or "utf-8")
        except (UnicodeDecodeError, LookupError):
            return self.send(400, "body is not valid text\n")
        if ctype == "application/x-www-form-urlencoded":
            body = urllib.parse.parse_qs(text, keep_blank_values=True).get("body", [""])[0]
        elif ctype == "text/plain":
            body = text
        else:
            return self.send(415, "send a form (field body) or text/plain\n")
        body = body.strip()
        if not body:
            return self.send(400, "empty note\n")
        try:
            query("INSERT INTO notes (body) VALUES (%s)", (body,), fetch=False)
        except psycopg2.Error as e:
            return self.db_error(e)
        self.send(303, "see /\n", headers=[("Location", "/")])

    def log_message(self, fmt, *args):
        sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))


def main():
    if not DB["password"]:
        log("DB_PASSWORD is empty or not set: it is required")
        sys.exit(1)
    # PID 1 in a container gets no default SIGTERM action: stop on it explicitly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"version {VERSION}, database {where()}")
    wait_for_db()
    server = ThreadingHTTPServer(("0.0.0.0", LISTEN_PORT), Handler)
    server.daemon_threads = True
    log(f"listening on 0.0.0.0:{LISTEN_PORT}")
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        log("stopped")


if __name__ == "__main__":
    main()
