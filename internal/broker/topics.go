package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/cloud-builder/cb/internal/message"
)

// FixedTopics are the topics every installation uses, whatever its runner
// groups are called.
var FixedTopics = []string{
	message.TopicResponse,
	message.TopicInfoRequest,
	message.TopicInfoResponse,
	message.TopicDefaultRequests,
	message.TopicHeartbeat,
}

// ValidateTopic checks a topic name the way Kafka does, so that a bad runner
// group name fails with a clear message instead of a protocol error code.
func ValidateTopic(name string) error {
	if name == "" {
		return errors.New("topic name is empty")
	}
	if len(name) > 249 {
		return fmt.Errorf("topic name %.20q...: longer than 249 characters", name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("topic name %q is not allowed", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("topic name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// EnsureTopics creates the topics that do not exist yet with the given
// number of partitions and, when retention > 0, retention.ms. Existing topics
// keep their configuration, but get more partitions if they have fewer than
// asked for (partitions can never shrink in Kafka). partitions <= 0 uses the
// broker's default and never grows a topic.
func (c *Client) EnsureTopics(ctx context.Context, partitions int32, retention time.Duration, topics ...string) error {
	return ensureTopics(ctx, c.adm, partitions, retention, topics...)
}

func ensureTopics(ctx context.Context, adm *kadm.Client, partitions int32, retention time.Duration, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	for _, t := range topics {
		if err := ValidateTopic(t); err != nil {
			return fmt.Errorf("ensure topics: %w", err)
		}
	}
	var configs map[string]*string
	if retention > 0 {
		configs = map[string]*string{"retention.ms": kadm.StringPtr(strconv.FormatInt(retention.Milliseconds(), 10))}
	}
	create := partitions
	if create <= 0 {
		create = -1
	}
	resps, err := adm.CreateTopics(ctx, create, -1, configs, topics...)
	if err != nil {
		return fmt.Errorf("create topics: %w", mapClosed(err))
	}
	for _, r := range resps.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	if partitions <= 0 {
		return nil
	}
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("list topics: %w", mapClosed(err))
	}
	var grow []string
	for _, d := range details.Sorted() {
		if d.Err != nil {
			return fmt.Errorf("describe topic %s: %w", d.Topic, d.Err)
		}
		if int32(len(d.Partitions)) < partitions {
			grow = append(grow, d.Topic)
		}
	}
	if len(grow) == 0 {
		return nil
	}
	gresps, err := adm.UpdatePartitions(ctx, int(partitions), grow...)
	if err != nil {
		return fmt.Errorf("add partitions: %w", mapClosed(err))
	}
	for _, r := range gresps.Sorted() {
		if r.Err != nil {
			return fmt.Errorf("add partitions to %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}
