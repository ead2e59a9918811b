"""A Hugging Face Hub on 127.0.0.1 for offline tests: the endpoints ``huggingface_hub.snapshot_download``
calls (revision info, tree listing, file HEAD/GET with ``X-Repo-Commit`` / ``ETag`` / ``Content-Length``,
errors as ``X-Error-Code``), and ``point_hub_at`` to aim huggingface_hub at it."""

import hashlib
import json
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

TOKEN = "hf_test_token"  # the token a gated repository accepts


class FakeHub:
    """Repositories served as the Hub serves them: ``add`` a commit, ``faults[path]`` = per-GET ``drop``/``fail``."""

    def __init__(self):
        self.repos, self.hits, self.faults, self.url = {}, [], {}, None

    def add(self, repo, files, branch="main", gated=False):
        entry = self.repos.setdefault(repo, {"refs": {}, "commits": {}, "gated": gated})
        sha = hashlib.sha1(repo.encode() + b"".join(k.encode() + v for k, v in sorted(files.items()))).hexdigest()
        entry["commits"][sha], entry["refs"][branch] = dict(files), sha
        return sha

    def files_fetched(self, repo):
        return sorted({p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in self.hits
                       if m == "GET" and p.startswith(f"/{repo}/resolve/")})

    def handler(self):
        hub_ = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                self.answer(head=True)

            def do_GET(self):
                self.answer(head=False)

            def answer(self, head):
                path = urlsplit(self.path).path
                hub_.hits.append((self.command, path))
                api = re.fullmatch(r"/api/models/(.+?)/(revision|tree)/([^/]+)", path)
                file = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
                if api or file:
                    found = self.commit(unquote((api or file)[1]), unquote((api or file)[2 if file else 3]))
                    if found and api:
                        self.api(*found, api[2])
                    elif found:
                        self.file(*found, unquote(file[3]), head)
                else:
                    self.send(404, {})

            def commit(self, repo, rev):
                entry = hub_.repos.get(repo)
                if entry is None:  # the Hub answers 401 for missing and private repositories alike
                    return self.send(401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
                sha = entry["refs"].get(rev, rev if rev in entry["commits"] else None)
                if sha is None:
                    return self.send(404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
                return repo, entry, sha

            def api(self, repo, entry, sha, kind):
                files = entry["commits"][sha]
                body = ({"id": repo, "sha": sha, "siblings": [{"rfilename": f} for f in files]} if kind == "revision"
                        else [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                              for f, b in files.items()])
                self.send(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

            def file(self, repo, entry, sha, name, head):
                if entry["gated"] and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.send(401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"})
                body = entry["commits"][sha].get(name)
                if body is None:
                    return self.send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
                meta = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
                fault = None if head else (hub_.faults.get(name) or [None]).pop(0)
                if fault == "fail":
                    return self.send(500, {})
                self.send(200, meta, b"" if head else body, length=len(body), cut=fault == "drop")

            def send(self, status, headers, body=b"", length=None, cut=False):
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body) if length is None else length)}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if cut else body)  # cut: promise all, send half, close
                self.close_connection = True

            def log_message(self, *args):
                pass

        return Handler


def point_hub_at(monkeypatch, endpoint, home: Path, offline=False):
    """huggingface_hub reads its environment at import: set both the variables and its constants."""
    from huggingface_hub import constants as hf_constants

    env = {"HF_HOME": home, "HF_HUB_CACHE": home / "hub", "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": int(offline)}
    for var, value in env.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for name, value in {"ENDPOINT": endpoint, "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": offline,
                        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
                        "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens")
                        }.items():
        monkeypatch.setattr(hf_constants, name, value)
