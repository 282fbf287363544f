"""A real SMTP server (aiosmtpd) for the e-mail receiver's tests.

With --cert/--key it offers STARTTLS and requires it before MAIL; without,
it speaks plain SMTP only. With --user/--password it accepts that login
(only after STARTTLS). Every accepted message is written to OUT as NNN.eml,
its envelope and session to NNN.json (written last, so a reader that sees
the .json sees both). --reject CODE answers every message with CODE.
Prints READY once listening, then runs until killed.
"""

import argparse
import json
import os
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, out, reject):
        self.out = out
        self.reject = reject
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        if self.reject:
            return f"{self.reject} rejected by the test server"
        self.n += 1
        base = os.path.join(self.out, f"{self.n:03d}")
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        login = None
        if session.auth_data is not None and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode()
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "login": login,
        }
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 Message accepted for delivery"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--reject")
    a = p.parse_args()

    kwargs = {}
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        kwargs.update(tls_context=ctx, require_starttls=True)
    if a.user:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == a.user
                and auth_data.password.decode() == a.password
            )
            # Kept on the session, so the message's record can say who.
            return AuthResult(success=ok, auth_data=auth_data if ok else None)

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=True)

    c = Controller(Handler(a.out, a.reject), hostname=a.host, port=a.port, **kwargs)
    c.start()
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        c.stop()


if __name__ == "__main__":
    main()
