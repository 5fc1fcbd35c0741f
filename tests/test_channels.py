"""Channels (issue 10): subscribe by URL and by wshub.v1 command, broadcast to one channel, to
several or to all, across several workers; refusals are explicit; resume is per channel set."""
import asyncio
import os
import time

import pytest
import websockets
from websockets.exceptions import InvalidStatusCode

from wsclients import in_thread, until, v1_parse as parse
from wshub_stack import make_base_dir

V1 = "wshub.v1"


def post(stack, body, query=""):
    r = stack.hub.fcgi("POST", "/admin/broadcast" + query, body,
                       {"Content-Type": "text/plain; charset=utf-8"})
    assert r.status == 202, r
    return r.json()


class Sub:
    """Records every message of one connection (raw or wshub.v1)."""

    def __init__(self, ws, name):
        self.ws, self.name, self.got = ws, name, []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            while True:
                self.got.append(await self.ws.recv())
        except websockets.ConnectionClosed:
            pass

    def v1(self, kind="m"):
        return [parse(m) for m in self.got if parse(m)[0][0] == kind]


async def sub(url, name, v1=False):
    ws = await websockets.connect(url, subprotocols=[V1] if v1 else None, ping_interval=None)
    return Sub(ws, name)


def test_channel_fanout_across_workers(make_stack):
    stack = make_stack(workers=3, nginx=True)
    base = stack.hub.ws_url

    async def scenario():
        # 60 clients per group, spread over the 3 workers by the accept balancing.
        groups = {
            "all": [await sub(base, "all%d" % i) for i in range(60)],
            "a": [await sub(base + "/room.a", "a%d" % i) for i in range(60)],
            "b": [await sub(base + "?channel=room.b", "b%d" % i) for i in range(60)],
            "ab": [await sub(base + "?channel=room.a,room.b", "ab%d" % i) for i in range(60)],
            "nginx": [await sub(stack.nginx.ws_url + "/room.a", "ng%d" % i) for i in range(10)],
        }
        workers = {c["worker"] for c in stack.admin("GET", "/admin/connections").json()
                   ["connections"]}
        assert len(workers) == 3, workers
        await in_thread(post, stack, b"to a", "?channel=room.a")
        await in_thread(post, stack, b"to b", "?channel=room.b")
        await in_thread(post, stack, b"to nobody", "?channel=room.zzz")
        r = await in_thread(post, stack, b"to a and b", "?channel=room.a,room.b")
        assert len(r["seqs"]) == 2 and r["seq"] == r["seqs"][0]
        await in_thread(post, stack, b"to all")
        want = {"all": ["to all"],
                "a": ["to a", "to a and b", "to all"],
                "b": ["to b", "to a and b", "to all"],
                "ab": ["to a", "to b", "to a and b", "to a and b", "to all"],
                "nginx": ["to a", "to a and b", "to all"]}
        # A last broadcast to all marks the end: whatever a client got before it is all it gets.
        await in_thread(post, stack, b"end")
        for g, clients in groups.items():
            await until(lambda: all(c.got and c.got[-1] == "end" for c in clients), 15,
                        "group %s to receive the end marker" % g)
            for c in clients:
                assert c.got == want[g] + ["end"], (c.name, c.got)
                await c.ws.close()

    asyncio.run(scenario())


def test_subscribe_by_command(make_stack):
    stack = make_stack(workers=2, nginx=False,
                       options={"max_channels_per_connection": "3", "max_channel_name": "20"})

    async def scenario():
        c = await sub(stack.hub.ws_url, "cmd", v1=True)
        await until(lambda: c.v1("w"), 5, "welcome")
        await c.ws.send("s news")
        await until(lambda: c.v1("s"), 5, "subscribe reply")
        assert c.v1("s")[0][0][:3] == ["s", "news", "ok"]
        after = int(c.v1("s")[0][0][3])
        seq = (await in_thread(post, stack, b"headline", "?channel=news"))["seq"]
        await in_thread(post, stack, b"sports", "?channel=sports")
        await until(lambda: c.v1("m"), 5, "the channel message")
        assert c.v1("m") == [(["m", str(seq), "news"], b"headline")] and seq > after
        # A command in several fragments is gathered; an over-long one is not a command.
        for frags, reply in ((["s ne", "ws", "2"], ["s", "news2", "ok"]),
                             (["s " + "y" * 40, "z" * 40], ["e", "unknown-command"])):
            n = len(c.got)
            await c.ws.send(iter(frags))
            await until(lambda: len(c.got) > n, 5, "reply to a fragmented command")
            assert parse(c.got[n])[0][:len(reply)] == reply, c.got[n]
        await c.ws.send("u news2")
        await until(lambda: c.v1("u"), 5, "the unsubscribe reply")
        for cmd, reply in [("s bad/name", ["s", "bad/name", "denied", "invalid-name"]),
                           ("s " + "x" * 21, ["s", "x" * 21, "denied", "invalid-name"]),
                           ("s two", ["s", "two", "ok"]), ("s three", ["s", "three", "ok"]),
                           ("s four", ["s", "four", "denied", "too-many"]),
                           ("u news", ["u", "news", "ok"]), ("s four", ["s", "four", "ok"]),
                           ("hello", ["e", "unknown-command"])]:
            n = len(c.got)
            await c.ws.send(cmd)
            await until(lambda: len(c.got) > n, 5, "reply to " + cmd)
            got = parse(c.got[n])[0]
            assert got[:len(reply)] == reply and len(got) == len(reply) + (
                reply[0] == "s" and reply[-1] == "ok"), (cmd, c.got[n])
        n = len(c.v1("m"))
        await in_thread(post, stack, b"unsubscribed", "?channel=news")
        seq = (await in_thread(post, stack, b"four", "?channel=four"))["seq"]
        await until(lambda: len(c.v1("m")) > n, 5, "channel four")
        assert c.v1("m")[n:] == [(["m", str(seq), "four"], b"four")]
        await c.ws.close()

    asyncio.run(scenario())


def test_bad_channel_requests(make_stack):
    stack = make_stack(workers=1, nginx=False, options={"max_channels_per_connection": "2"})
    url = stack.hub.ws_url

    async def scenario():
        for bad in ["/bad%20name", "/a/b", "?channel=", "?channel=a,,b", "?channel=a,b,c",
                    "?channel=" + "x" * 56, "/ok?channel=a,b"]:
            with pytest.raises(InvalidStatusCode) as e:
                await websockets.connect(url + bad)
            assert e.value.status_code in (400, 404), bad
        for bad in ["?channel=a%0a", "?user=", "?channel=a&user=" + "u" * 60]:
            r = await in_thread(lambda: stack.hub.fcgi(
                "POST", "/admin/broadcast" + bad, b"x", {"Content-Type": "text/plain"}))
            assert r.status == 400, (bad, r)

    asyncio.run(scenario())


def test_resume_per_channel(make_stack):
    stack = make_stack(workers=2, nginx=False)

    async def scenario():
        c = await sub(stack.hub.ws_url + "/alerts", "resumer", v1=True)
        await until(lambda: c.v1("w"), 5, "welcome")
        epoch, last = c.v1("w")[0][0][1], int(c.v1("w")[0][0][2])
        await c.ws.close()
        mine = []
        for i in range(20):
            if i % 3 == 0:
                mine.append(((await in_thread(post, stack, b"alert %d" % i, "?channel=alerts"))
                             ["seq"], b"alert %d" % i))
            else:
                await in_thread(post, stack, b"other %d" % i, "?channel=other")
        all_seq = (await in_thread(post, stack, b"to all"))["seq"]
        mine.append((all_seq, b"to all"))
        r = await sub(stack.hub.ws_url + "/alerts?since=%d&epoch=%s" % (last, epoch), "r",
                      v1=True)
        await until(lambda: len(r.v1("m")) >= len(mine), 10, "the missed alerts")
        assert r.v1("w")[0][0][3] == "resumed"
        assert [(int(f[1]), b) for f, b in r.v1("m")] == mine
        await r.ws.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------------
# Users, tokens and presence (needs authentication: the user id is the token's sub)

SECRET = b"channels-test-secret-of-at-least-32-bytes!"


def token(sub, **claims):
    import jwt  # python3-jwt (Debian)
    now = int(time.time())
    body = {"sub": sub, "iat": now, "exp": now + 300}
    body.update(claims)
    return jwt.encode(body, SECRET, algorithm="HS256", headers={"kid": "k1"})


def auth_stack(make_stack, workers=3):
    base = make_base_dir("wshub-chan-")
    path = os.path.join(base, "hs.secret")
    with open(path, "wb") as f:
        f.write(SECRET)
    os.chmod(path, 0o644)
    return make_stack(workers=workers, nginx=False,
                      options={"jwt_key": "k1 HS256 file:%s" % path})


def test_users_presence_and_claims(make_stack):
    stack = auth_stack(make_stack)
    url = stack.hub.ws_url

    async def scenario():
        conns = {}
        for name, sub_, path in [("alice1", "alice", "/room.x"), ("alice2", "alice", "/room.x"),
                                 ("bob", "bob", "/room.x?channel=room.y"),
                                 ("carol", "carol", "/room.y"), ("dave", "dave", "")]:
            conns[name] = await sub(url + path + ("&" if "?" in path else "?") + "token=" +
                                    token(sub_), name, v1=True)
        dave = conns["dave"]
        await until(lambda: dave.v1("w"), 5, "dave's welcome")
        await dave.ws.send("s room.x")
        await until(lambda: dave.v1("s"), 5, "dave's subscription")
        seqs = [(await in_thread(post, stack, b"x%d" % i, "?channel=room.x"))["seq"]
                for i in range(3)]
        to_alice = (await in_thread(post, stack, b"just alice", "?user=alice"))["seq"]
        await until(lambda: all(len(conns[n].v1("m")) >= 4 for n in ("alice1", "alice2")), 10,
                    "alice's messages")
        for n in ("alice1", "alice2"):
            assert conns[n].v1("m")[-1] == (["m", str(to_alice), "@alice"], b"just alice")
        await until(lambda: len(dave.v1("m")) >= 3 and len(conns["bob"].v1("m")) >= 3, 10,
                    "room.x for bob and dave")
        assert [int(f[1]) for f, _ in conns["bob"].v1("m")] == seqs
        assert conns["carol"].v1("m") == []

        chans = await in_thread(lambda: stack.admin("GET", "/admin/channels").json())
        by = {c["channel"]: c for c in chans["channels"]}
        assert set(by) == {"room.x", "room.y"}, chans  # "@alice" is not listed
        assert by["room.x"]["subscribers"] == 4 and by["room.y"]["subscribers"] == 2
        assert by["room.x"]["messages"] == 3 and chans["channels"][0]["channel"] == "room.x"
        pres = await in_thread(lambda: stack.admin(
            "GET", "/admin/channels/room.x/presence").json())
        assert pres["connections"] == 4, pres
        assert pres["users"][0] == {"user": "alice", "connections": 2}, pres
        assert {u["user"] for u in pres["users"]} == {"alice", "bob", "dave"}
        rows = await in_thread(lambda: stack.admin("GET", "/admin/connections?user=bob").json())
        assert sorted(rows["connections"][0]["channels"]) == ["room.x", "room.y"], rows
        text = await in_thread(lambda: stack.admin("GET", "/metrics").body.decode())
        assert 'wshub_channel_subscribers{channel="room.x"} 4' in text
        assert "wshub_channels 2" in text
        r = await in_thread(lambda: stack.admin("GET", "/admin/channels/bad%20name/presence"))
        assert r.status == 404

        # A channels claim limits subscriptions: refused in the URL (1008) and by command.
        limited = token("eve", channels=["room.*"])
        ws = await websockets.connect(url + "/secret?token=" + limited, subprotocols=[V1])
        with pytest.raises(websockets.ConnectionClosed) as e:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert e.value.rcvd.code == 1008 and "not allowed" in e.value.rcvd.reason
        eve = await sub(url + "/room.z?token=" + limited, "eve", v1=True)
        for cmd, want in (("s secret", ["s", "secret", "denied", "not-allowed"]),
                          ("s room.q", ["s", "room.q", "ok"])):
            n = len(eve.got)
            await eve.ws.send(cmd)
            await until(lambda: len(eve.got) > n + (n == 0), 5, "reply to " + cmd)
            assert parse(eve.got[-1])[0][:len(want)] == want, eve.got
        for c in list(conns.values()) + [eve]:
            await c.ws.close()
        await until(lambda: stack.admin("GET", "/admin/channels").json()["total"] == 0, 10,
                    "the channels to empty")

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------------
# Across instances: the Redis bridge carries the channel, so channel and user broadcasts reach
# subscribers on every instance.


def test_channels_across_instances(make_stack):
    import random
    import shutil

    import redis_server
    from wshub_stack import wait_for

    base = make_base_dir("wshub-redis-")
    rs = redis_server.RedisServer(base).start()
    try:
        keydir = make_base_dir("wshub-chan-")
        path = os.path.join(keydir, "hs.secret")
        with open(path, "wb") as f:
            f.write(SECRET)
        os.chmod(path, 0o644)
        options = {"redis": rs.address, "redis_prefix": "wsch%06x:" % random.getrandbits(24),
                   "jwt_key": "k1 HS256 file:%s" % path}
        stacks = [make_stack(workers=2, nginx=False, options=options) for _ in range(2)]
        for st in stacks:
            wait_for(lambda: st.hub.stats()["redis_bridge"]["state"] == "closed", 15,
                     "the bridge to connect")

        async def scenario():
            url = stacks[1].hub.ws_url
            news = await sub(url + "/news?token=" + token("alice"), "news", v1=True)
            bob = await sub(url + "?token=" + token("bob"), "bob", v1=True)
            other = await sub(url + "/sports?token=" + token("carol"), "other", v1=True)
            await until(lambda: news.v1("w") and bob.v1("w") and other.v1("w"), 5, "welcomes")
            await in_thread(post, stacks[0], b"from A to news", "?channel=news")
            await in_thread(post, stacks[0], b"from A to bob", "?user=bob")
            await in_thread(post, stacks[0], b"from A to all")
            await until(lambda: len(news.v1("m")) >= 2 and len(bob.v1("m")) >= 2 and
                        len(other.v1("m")) >= 1, 15, "the messages through Redis")
            assert [(f[2] if len(f) > 2 else None, b) for f, b in news.v1("m")] == \
                [("news", b"from A to news"), (None, b"from A to all")]
            assert [(f[2] if len(f) > 2 else None, b) for f, b in bob.v1("m")] == \
                [("@bob", b"from A to bob"), (None, b"from A to all")]
            assert [b for _, b in other.v1("m")] == [b"from A to all"]
            for c in (news, bob, other):
                await c.ws.close()

        asyncio.run(scenario())
        shutil.rmtree(keydir, ignore_errors=True)
    finally:
        rs.kill()
        shutil.rmtree(base, ignore_errors=True)
