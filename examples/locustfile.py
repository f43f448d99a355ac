"""A Locust load test of TopGun through the real client (topgun.contrib.locust).

Each simulated user writes its own keys with set() and reads one back now and then; Locust
reports every call under its method (set, get, put_all) and the map name. Needs the extra:
``pip install topgun[locust]``. Run it against a server (or cluster seeds, comma-separated)::

    python -m topgun.server --nodes 3 --port 8080 &
    locust -f examples/locustfile.py --headless -u 50 -r 50 -t 30s --host ws://127.0.0.1:8080

Without ``--headless`` Locust serves its web UI on http://localhost:8089.
"""
from locust import between, task

from topgun.contrib.locust import TopGunUser


class MapWriter(TopGunUser):
    wait_time = between(0.0, 0.01)
    client_options = {"request_timeout": 10.0}

    def on_start(self) -> None:
        self.users = self.client.map("locust-users")
        self.seq = 0

    def key(self) -> str:
        return f"user:{self.user_index}:{self.seq % 100}"

    @task(8)
    def write(self) -> None:
        self.seq += 1
        self.users.set(self.key(), {"seq": self.seq, "name": "Ada"})

    @task(1)
    def write_batch(self) -> None:
        self.seq += 10
        self.users.put_all({f"batch:{self.user_index}:{i}": {"seq": self.seq} for i in range(10)})

    @task(1)
    def read(self) -> None:
        self.users.get(self.key())
