"""What a bearer token costs: verification in-process (cached JWKS; RS256, ES256, and HS256 with
a shared secret), and /api/ask p50 over HTTP with and without a token on one server, real model,
keys served by a loopback JWKS server. `main()` prints and returns the figures."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python bench/auth.py`

import anyio  # noqa: E402

from bench import http_load  # noqa: E402
from bench.server import Server  # noqa: E402
from service.http.bearer import TokenVerifier  # noqa: E402
from service.http.jwks import JwksKeys, SharedSecret  # noqa: E402
from tests.tokens import (  # noqa: E402
    AUDIENCE,
    ISSUER,
    JwksServer,
    claims,
    ec_key,
    forge,
    rsa_key,
    sign,
)

SECRET = b"a bench secret of thirty-two bytes or more"
ROUNDS = 3


def _verify_us(verifier: TokenVerifier, tokens: list[str], repeat: int) -> float:
    """Median µs of one `verify` (keys cached), over `repeat` passes of `tokens`."""

    async def run() -> list[float]:
        for token in tokens:  # warm: the first call fetches the keys
            await verifier.verify(token)
        times = []
        for _ in range(repeat):
            for token in tokens:
                started = time.perf_counter()
                await verifier.verify(token)
                times.append((time.perf_counter() - started) * 1e6)
        return times

    return round(statistics.median(anyio.run(run)), 1)


def _ask(question: str, token: str | None) -> bytes:
    body = json.dumps({"question": question, "top_k": 3}).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST /api/ask HTTP/1.1\r\nHost: {http_load.HOST}\r\n"
            f"Content-Type: application/json\r\n{auth}Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def main(index_dir: Path | None = None) -> dict[str, Any]:
    rsa, ec = rsa_key(), ec_key()
    questions = [json.loads(line)["question"] for line in
                 (ROOT.parent / "shared" / "eval" / "seed_qa.jsonl").read_text().splitlines()]
    figures: dict[str, Any] = {}
    with JwksServer([rsa, ec]) as provider, tempfile.TemporaryDirectory() as tmp:
        keys = JwksKeys(provider.url)
        jwks = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
        secret = TokenVerifier(SharedSecret(SECRET), issuer=ISSUER, audience=AUDIENCE)
        tokens = {"RS256": [sign(rsa, claims(f"user{i}", ["staff"])) for i in range(50)],
                  "ES256": [sign(ec, claims(f"user{i}", ["staff"])) for i in range(50)],
                  "HS256": [forge({"alg": "HS256"}, claims(f"user{i}"), SECRET)
                            for i in range(50)]}
        figures["verify_us"] = {
            alg: _verify_us(secret if alg == "HS256" else jwks, batch, 40)
            for alg, batch in tokens.items()}
        figures["jwks_fetches"] = keys.fetches
        if index_dir is None:
            from service.index.indexing import build_index
            from service.settings import Settings

            index_dir = Path(tmp) / "index"
            build_index(Settings(corpus_dir=ROOT / "corpus", index_dir=index_dir))
        env = {"QA_INDEX_DIR": str(index_dir), "QA_CORPUS_DIR": str(ROOT / "corpus"),
               "QA_CACHE_SIZE": "0", "QA_RATE_LIMIT": "0", "QA_RELOAD_INTERVAL": "0",
               "QA_LOG_LEVEL": "WARNING", "QA_JWT_JWKS_URL": provider.url,
               "QA_JWT_ISSUER": ISSUER, "QA_JWT_AUDIENCE": AUDIENCE}
        kinds = {"no token": None, "RS256": tokens["RS256"][0], "ES256": tokens["ES256"][0]}
        requests = {kind: [_ask(q, token) for q in questions] for kind, token in kinds.items()}
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        failed = 0
        with Server(env, log=Path(tmp) / "server.log", extra_args=("--no-access-log",)) as srv:
            conn = http_load.Connection(srv.port)
            try:
                # Kinds alternate request by request on one connection: a busy moment on the
                # machine hits every kind alike.
                for n in range(ROUNDS * 10 * len(questions) + len(questions)):
                    for kind in kinds:
                        started = time.perf_counter()
                        status, _ = conn.call(requests[kind][n % len(questions)])
                        if n >= len(questions):  # the first pass warms up
                            times[kind].append((time.perf_counter() - started) * 1000)
                        failed += status != 200
            finally:
                conn.close()
        figures["ask_p50_ms"] = {kind: round(statistics.median(v), 3) for kind, v in times.items()}
        figures["requests_per_kind"] = len(times["no token"])
        figures["failed"] = failed
        figures["server_jwks_fetches"] = provider.requests - keys.fetches
    print_figures(figures)
    return figures


def print_figures(f: dict[str, Any]) -> None:
    base = f["ask_p50_ms"]["no token"]
    print("token verification, in-process, keys cached (median µs per token):")
    for alg, us in f["verify_us"].items():
        print(f"  {alg:6s}{us:9.1f} µs   ({us / 10 / base:.1f}% of the /api/ask p50 below)"
              f"{'  shared secret' if alg == 'HS256' else '  JWKS'}")
    print(f"/api/ask p50 over HTTP, concurrency 1, answer cache off ({f['requests_per_kind']} "
          "requests of each kind, alternating):")
    for kind, ms in f["ask_p50_ms"].items():
        extra = "" if kind == "no token" else f"   (+{(ms - base) * 1000:.0f} µs)"
        print(f"  {kind:9s}{ms:9.3f} ms{extra}")
    print(f"the server fetched the JWKS {f['server_jwks_fetches']} time(s) in all; "
          f"failed requests: {f['failed']}")


if __name__ == "__main__":
    main()
