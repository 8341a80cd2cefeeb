// Package broker is the Kafka layer of Cloud Builder: a producer/admin
// [Client], a [Consumer] for shared queues and publish/subscribe readers, and
// an [Embedded] Kafka-protocol broker for single-machine installations.
//
// The same client code talks to the embedded broker and to a real Kafka
// cluster (Apache Kafka, Redpanda, MSK); nothing in the client path depends on
// the embedded implementation.
//
// # Delivery guarantees
//
// Delivery is at-least-once, and a request is never lost by this layer:
//
//   - [Client.Publish] returns only after the broker acknowledged the record
//     with acks=all, i.e. after it is durable on every in-sync replica (for
//     the embedded broker: written to its data directory). A caller that
//     reports "request sent" after Publish returned nil can rely on it.
//   - Consumers never commit automatically. A record counts as done only when
//     the caller passes it to [Consumer.Ack], which commits synchronously.
//     The committed offset of a partition only advances over the contiguous
//     prefix of acknowledged records: acking a later record while an earlier
//     one is still in progress does not commit past the earlier one, so a
//     crash redelivers every record whose work was not finished.
//   - When a group member dies or leaves without acking, its partitions move
//     to another member after the rebalance, which starts at the last
//     committed offset and therefore receives the unacknowledged records
//     again. A revoked partition is never committed on the way out.
//
// The flip side of at-least-once is that a record can be delivered twice: a
// member that finishes work after its partition was moved away cannot commit
// it, and the new owner processes it again. Receivers must tolerate this
// (the runner treats a repeated request for a target like a new one).
//
// # Queues and subscriptions
//
// A shared queue is a topic read by many members with one group id: each
// record goes to exactly one member, partitions are spread over the members.
// Publish/subscribe readers use a group of their own ([SubscriberGroup]) or
// no group at all (ConsumerConfig.Group == ""), in which case every partition
// is read directly and nothing is committed.
package broker
