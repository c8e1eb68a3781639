"""Operator questions: the manager asks, the operator answers, the answer arrives in the
asker's inbox as a message from `operator`."""

import json
import time

from hyperhive.broker.db import fits
from hyperhive.broker.messages import OPERATOR, Broker
from hyperhive.errors import AlreadyDecided, BadInput, UnknownQuestion

MAX_QUESTION = 16 * 1024


def _row(row) -> dict:
    return {
        "id": row["id"],
        "asker": row["asker"],
        "question": row["question"],
        "options": json.loads(row["options"]) if row["options"] else None,
        "asked_at": row["asked_at"],
        "answer": row["answer"],
        "answered_at": row["answered_at"],
        "answered_by": row["answered_by"],
    }


def ask(broker: Broker, asker: str, question: object, options: object = None) -> int:
    if not isinstance(question, str) or not question.strip():
        raise BadInput("ask_operator needs a non-empty `question`")
    if len(question.encode()) > MAX_QUESTION:
        raise BadInput(f"a question is at most {MAX_QUESTION} bytes")
    if options is not None and (
        not isinstance(options, list) or not all(isinstance(o, str) and o for o in options)
    ):
        raise BadInput("`options` must be a list of non-empty strings, or left out")
    with broker.db.write(begin=False) as conn:
        return conn.execute(
            "INSERT INTO questions (asker, question, options, asked_at) VALUES (?, ?, ?, ?)",
            (asker, question, json.dumps(options) if options else None, time.time()),
        ).lastrowid


def pending(broker: Broker) -> list[dict]:
    with broker.db.connection() as conn:
        rows = conn.execute(
            "SELECT * FROM questions WHERE answered_at IS NULL ORDER BY id"
        ).fetchall()
    return [_row(r) for r in rows]


def answer(broker: Broker, question_id: int, text: object, by: str) -> dict:
    """Record the answer and deliver it to the asker, in one transaction."""
    if not isinstance(text, str) or not text.strip():
        raise BadInput("an answer needs text")
    with broker.db.write() as conn:
        row = None
        if fits(question_id):
            row = conn.execute("SELECT * FROM questions WHERE id = ?", (question_id,)).fetchone()
        if row is None:
            raise UnknownQuestion(f"unknown question {question_id}")
        if row["answered_at"] is not None:
            raise AlreadyDecided(
                f"question {question_id} was already answered by {row['answered_by']}"
            )
        now = time.time()
        conn.execute(
            "UPDATE questions SET answer = ?, answered_at = ?, answered_by = ? WHERE id = ?",
            (text, now, by, question_id),
        )
        body = f"Answer to your question #{question_id} ({row['question']}): {text}"
        conn.execute(
            "INSERT INTO messages (sender, recipient, body, created_at) VALUES (?, ?, ?, ?)",
            (OPERATOR, row["asker"], body, now),
        )
        row = conn.execute("SELECT * FROM questions WHERE id = ?", (question_id,)).fetchone()
    broker.wake([row["asker"]])
    return _row(row)
