#!/usr/bin/python3
"""mint-token.py -- mint an HS256/384/512 JWT for wshub, for development and tests.

    scripts/mint-token.py --secret-file run/jwt-dev.secret [--kid dev] [--sub alice] [--ttl 1h]
                          [--iss ISSUER] [--aud AUDIENCE] [--channel news --channel 'room.*']

Prints the token. The secret file is what wshub reads for `jwt_key <kid> HS256 file:PATH`
(one trailing newline is ignored, as wshub does). Standard library only (hmac, base64, json):
production tokens come from your own issuer, typically signed with RS256 or ES256, whose public
key wshub is given (docs/security.md).
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
import time

DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_ttl(text):
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def mint(secret, alg, kid, claims):
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    signing_input = b64u(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64u(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret, signing_input.encode(), DIGESTS[alg]).digest()
    return signing_input + "." + b64u(sig)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--secret-file", required=True, help="the HS secret (jwt_key ... file:PATH)")
    p.add_argument("--alg", default="HS256", choices=sorted(DIGESTS))
    p.add_argument("--kid", default="dev", help="key id: the jwt_key's first word (dev)")
    p.add_argument("--sub", default="dev", help="user id (sub claim)")
    p.add_argument("--ttl", default="24h", help="lifetime: 90s, 30m, 24h, 7d (24h)")
    p.add_argument("--iss", help="iss claim (when wshub has jwt_issuer)")
    p.add_argument("--aud", help="aud claim (when wshub has jwt_audience)")
    p.add_argument("--channel", action="append", help="channels claim entry (repeatable)")
    args = p.parse_args(argv)
    with open(args.secret_file, "rb") as f:
        secret = f.read()
    if secret.endswith(b"\n"):
        secret = secret[:-1]
    if secret.endswith(b"\r"):
        secret = secret[:-1]
    now = int(time.time())
    claims = {"sub": args.sub, "iat": now, "exp": now + parse_ttl(args.ttl)}
    if args.iss:
        claims["iss"] = args.iss
    if args.aud:
        claims["aud"] = args.aud
    if args.channel:
        claims["channels"] = args.channel
    print(mint(secret, args.alg, args.kid, claims))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
