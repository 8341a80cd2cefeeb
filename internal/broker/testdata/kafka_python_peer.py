"""A peer that talks to the broker the way the original Python services
did (kafka-python): it sends requests, then reads the answers as a group
member with manual commits, and prints every answer it got (its first
word) with the answer's headers."""

import sys
import time

from kafka import KafkaConsumer, KafkaProducer

brokers = sys.argv[1].split(",")
request_topic, response_topic, count = sys.argv[2], sys.argv[3], int(sys.argv[4])

producer = KafkaProducer(bootstrap_servers=brokers, acks="all")
for i in range(count):
    producer.send(request_topic, ("py-%d" % i).encode())
producer.flush()
producer.close()

consumer = KafkaConsumer(
    response_topic,
    bootstrap_servers=brokers,
    group_id="py-readers",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
)
got = set()
deadline = time.time() + 30
while len(got) < count and time.time() < deadline:
    for records in consumer.poll(timeout_ms=500).values():
        for record in records:
            word = record.value.decode().split(" ")[0]
            got.add(word)
            headers = ",".join("%s=%s" % (k, v.decode()) for k, v in record.headers or [])
            print("got", word, "headers", headers, flush=True)
    consumer.commit()
consumer.close()
sys.exit(0 if len(got) == count else 1)
