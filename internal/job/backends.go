package job

// The buildroot backends register themselves; a job can use every one.
import (
	_ "github.com/cloud-builder/cb/internal/buildroot/kiwi"
	_ "github.com/cloud-builder/cb/internal/buildroot/native"
)
