"""The one secret scrubber: every place a config is written (manifests, W&B, Slurm stage YAML, local
worker YAML, train plans) and every config hashed into a stage key goes through `scrub`.

A key is a secret by its name, after normalising case and `-` (`X-Api-Key` -> `x_api_key`): api keys,
passwords, authorization/cookie headers, credentials, and credential tokens. "token" alone is no signal:
`eos_token`/`pad_token` name special tokens of a tokenizer and `max_tokens`/`completion_tokens` count
them, so a `*_token` key is kept when its first word is a special-token role and every `*_tokens` key is
kept. Names of environment variables (`*_env`) are kept: they say where a secret is, not what it is.
Values are scrubbed too, whatever their key: a URL's `user:password@` and an `Authorization`-style
`Bearer ...` string are redacted in place, so the rest of the URL stays readable.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
_SECRET_WORDS = re.compile(
    r"(^|_)(api_?key|apikey|secret|secrets|password|passwd|passphrase|authorization|auth|cookie|"
    r"set_cookie|credential|credentials|private_key|access_key|secret_key|session_key)($|_)"
)
# Roles a tokenizer's special tokens play: `<role>_token` is a vocabulary entry, not a credential.
SPECIAL_TOKEN_ROLES = {"eos", "bos", "pad", "unk", "sep", "cls", "mask", "start", "end", "stop", "think",
                       "im_start", "im_end", "additional_special", "special", "eot", "image", "audio"}  # fmt: skip
# `//` may have become `/` where a URL went through pathlib (a hub id given as a URL).
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:/{1,2})(?P<userinfo>[^/@\s]+)@")
_BEARER = re.compile(r"^\s*(bearer|basic|token)\s+\S+", re.I)


def secret_key(key: Any) -> bool:
    """Whether a config key names a secret (see the module docstring for the rules and why)."""
    k = re.sub(r"[^a-z0-9]+", "_", str(key).lower()).strip("_")
    if k.endswith("_env") or k.endswith("_tokens") or k == "tokens":
        return False
    if _SECRET_WORDS.search(k):
        return True
    if k == "token" or k.endswith("_token"):
        return k.removesuffix("_token") not in SPECIAL_TOKEN_ROLES
    return False


def scrub_value(value: str) -> str:
    """A string with any URL credentials and bearer/basic credentials replaced by `***`."""
    if _BEARER.match(value):
        return value.split()[0] + " " + REDACTED
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", value)


def scrub(obj: Any, found: list[str] | None = None, where: str = "") -> Any:
    """A copy of `obj` (dicts, lists, scalars) without secrets: secret keys dropped, secret values
    redacted. `found`, when given, collects the dotted paths of what was removed (for a warning)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            path = f"{where}.{k}" if where else str(k)
            if secret_key(k):
                if found is not None:
                    found.append(path)
                continue
            clean = scrub(v, found, path)
            if isinstance(v, dict) and not clean and any(secret_key(x) for x in v):
                continue  # a dict of only secrets (`headers: {Authorization: ...}`): as if never given
            out[k] = clean
        return out
    if isinstance(obj, (list, tuple)):
        return [scrub(v, found, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):
        clean = scrub_value(obj)
        if clean != obj and found is not None:
            found.append(where)
        return clean
    return obj


def scrub_config(cfg: Any, label: str = "") -> Any:
    """A resolved DictConfig without secrets, as a DictConfig (for YAML a job reads back). Announces what
    was dropped: a job that needed it must get it from the environment instead."""
    from omegaconf import OmegaConf

    found: list[str] = []
    clean = scrub(OmegaConf.to_container(cfg, resolve=True), found)
    if found:
        print(
            f"[distill] {label or 'config'}: left out secret-looking values {', '.join(found)}; "
            "secrets belong in the environment (e.g. engine.api_key_env), not in files",
            flush=True,
        )
    return OmegaConf.create(clean)


def scrub_override(override: str) -> str:
    """One command-line override (`key=value`) as it may be shown: a secret key's value, or a credential
    in the value, replaced by `***` (the run report prints the command line)."""
    key, sep, value = override.partition("=")
    if not sep:
        return override
    leaf = key.lstrip("+~").rsplit(".", 1)[-1]
    return f"{key}={REDACTED}" if secret_key(leaf) else f"{key}={scrub_value(value)}"
