package message

import (
	"strings"
	"testing"
)

func TestDecodeDepsolverConfig(t *testing.T) {
	for _, tc := range []struct {
		in, err string
		want    DepsolverConfig
	}{
		{in: "{}", want: DepsolverConfig{Cascade: CascadeTransitive, ProjectRepository: true}},
		{in: "cascade: local\nproject_repository: false\nrepositories: [projects/A/bookworm]\n",
			want: DepsolverConfig{Cascade: CascadeLocal, Repositories: []string{"projects/A/bookworm"}}},
		{in: "cascade: always\n", err: "cascade"},
		{in: "cascde: direct\n", err: "unknown key"},
		{in: "repositories: [../etc]\n", err: "repositories[0]"},
		{in: "project_repository: yes please\n", err: "boolean"},
	} {
		c, err := DecodeDepsolverConfig([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if c.Cascade != tc.want.Cascade || c.ProjectRepository != tc.want.ProjectRepository || strings.Join(c.Repositories, ",") != strings.Join(tc.want.Repositories, ",") {
			t.Errorf("%q: got %+v, want %+v", tc.in, c, tc.want)
		}
	}
}
