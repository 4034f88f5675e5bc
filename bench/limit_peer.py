"""The loopback limit's other end: a bare process, started like shelfd.

    python bench/limit_peer.py send FILE   # each connection gets FILE by sendfile()
    python bench/limit_peer.py recv DIR    # each connection's bytes go to a file in DIR

Prints its port on stdout, then serves connections one at a time until killed.
A separate process on purpose: a sender that is a thread or fork of the
measuring process is scheduled beside its receiver and measures far less.
"""

import os
import socket
import sys

CHUNK = 1 << 20


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(listener.getsockname()[1], flush=True)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    count = 0
    while True:
        conn, _ = listener.accept()
        with conn:
            if mode == "send":
                with open(path, "rb") as handle:
                    conn.sendfile(handle)
            else:
                count += 1
                target = os.path.join(path, "limit-%d.bin" % count)
                with open(target, "wb", buffering=0) as out:
                    while True:
                        received = conn.recv_into(buffer)
                        if not received:
                            break
                        out.write(view[:received])
                conn.sendall(b"done\n")
                os.unlink(target)


if __name__ == "__main__":
    main()
