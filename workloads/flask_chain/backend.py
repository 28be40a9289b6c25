"""Backend: item lookups and order inserts against SQLite."""

from __future__ import annotations

import os
import sqlite3
import threading

from flask import Flask, jsonify, request

from workloads.flask_chain.common import install_ground_truth

N_ITEMS = 100  # ids above this return 404, so statuses vary


def init_db(path: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                   " item_id INTEGER, qty INTEGER)")
        db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?)",
                       [(i, f"item-{i}", 1.0 + i / 10) for i in range(1, N_ITEMS + 1)])


def create_app() -> Flask:
    app = Flask("backend")
    install_ground_truth(app, "backend")
    db_path = os.environ["DB_PATH"]
    init_db(db_path)
    local = threading.local()

    def db() -> sqlite3.Connection:
        if not hasattr(local, "db"):
            local.db = sqlite3.connect(db_path, timeout=5)
        return local.db

    @app.get("/items/<int:item_id>")
    def get_item(item_id: int):
        row = db().execute("SELECT id, name, price FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            return jsonify(error="not found"), 404
        return jsonify(id=row[0], name=row[1], price=row[2])

    @app.post("/orders")
    def create_order():
        body = request.get_json(silent=True) or {}
        conn = db()
        cur = conn.execute("INSERT INTO orders (item_id, qty) VALUES (?, ?)",
                           (int(body.get("item_id", 1)), int(body.get("qty", 1))))
        conn.commit()
        return jsonify(id=cur.lastrowid), 201

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    return app
