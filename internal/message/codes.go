package message

// ResponseCode is the response_code of a Response. The strings are part of
// the wire protocol shared with the original services and must not change.
type ResponseCode = string

// Response codes as the original services write them.
const (
	PackageRebuildRequested      ResponseCode = "package rebuild requested"
	PackageRebuildSourceChange   ResponseCode = "package rebuild due to source change"
	PackageBuildFailed           ResponseCode = "package build failed"
	PackageBuildFailedNoBinaries ResponseCode = "package build failed, no binaries found"
	PackageBinariesSyncFailed    ResponseCode = "package binaries sync failed"
	ImageBuildFailed             ResponseCode = "image build failed"
	PackageBuildSucceeded        ResponseCode = "package build succeeded"
	ImageBuildSucceeded          ResponseCode = "image build succeeded"
	BuildRootSetupFailed         ResponseCode = "build root setup failed"
	BuildRootSetupSucceeded      ResponseCode = "build root setup succeeded"
	PackageRequestAccepted       ResponseCode = "package request accepted"
	IncompatibleBuildArch        ResponseCode = "incompatible build arch"
	ResetRunningBuild            ResponseCode = "reset running build"
	ProjectDoesNotExist          ResponseCode = "project does not exist"
	ProjectMetadataDoesNotExist  ResponseCode = "project metadata does not exist"
	InvalidPackageMetadata       ResponseCode = "invalid package metadata"
	PackageTargetNotConfigured   ResponseCode = "package target not configured"
	ImageTargetNotConfigured     ResponseCode = "image target not configured"
	ImageRebuildSourceChange     ResponseCode = "image rebuild due to source change"
	ImageRebuildRequested        ResponseCode = "image rebuild requested"
	ImageRequestAccepted         ResponseCode = "image request accepted"
	PackageLocalBuildRequested   ResponseCode = "package build on localhost requested"
	ImageLocalBuildRequested     ResponseCode = "image build on localhost requested"
	// InvalidRequest is new in the Go implementation: a message on a request
	// topic that could not be decoded or validated.
	InvalidRequest ResponseCode = "invalid request"
	// ImageBinariesSyncFailed is new: the image counterpart of
	// PackageBinariesSyncFailed.
	ImageBinariesSyncFailed ResponseCode = "image binaries sync failed"
)

// Request actions of a BuildRequest. They share their strings with the
// matching response codes.
const (
	ActionPackageRebuild      = PackageRebuildRequested
	ActionPackageSourceChange = PackageRebuildSourceChange
	ActionImageRebuild        = ImageRebuildRequested
	ActionImageSourceChange   = ImageRebuildSourceChange
	ActionPackageLocalhost    = PackageLocalBuildRequested
	ActionImageLocalhost      = ImageLocalBuildRequested
)

var requestActions = map[string]bool{
	ActionPackageRebuild:      true,
	ActionPackageSourceChange: true,
	ActionImageRebuild:        true,
	ActionImageSourceChange:   true,
	ActionPackageLocalhost:    true,
	ActionImageLocalhost:      true,
}

// IsFinal reports whether code ends a build request: after it, no further
// response for the same request id follows.
func IsFinal(code ResponseCode) bool {
	switch code {
	case PackageBuildFailed, PackageBuildFailedNoBinaries, PackageBinariesSyncFailed,
		ImageBuildFailed, PackageBuildSucceeded, ImageBuildSucceeded, BuildRootSetupFailed,
		IncompatibleBuildArch, ProjectDoesNotExist, ProjectMetadataDoesNotExist,
		InvalidPackageMetadata, PackageTargetNotConfigured, ImageTargetNotConfigured,
		InvalidRequest, ImageBinariesSyncFailed:
		return true
	}
	return false
}

// IsSuccess reports whether code is a successful final response.
func IsSuccess(code ResponseCode) bool {
	return code == PackageBuildSucceeded || code == ImageBuildSucceeded
}

// Topics with fixed names.
const (
	TopicResponse        = "cb-response"
	TopicInfoRequest     = "cb-info-request"
	TopicInfoResponse    = "cb-info-response"
	TopicDefaultRequests = "cb-build-request"
)

// SchemaVersion is the schema_version written on every message.
const SchemaVersion = 0.2

// Messages of build root setup responses: the buildroot was created, or
// taken from the cache.
const (
	BuildRootReadyMessage  = "Buildroot ready for package build"
	BuildRootCachedMessage = "Buildroot ready for package build (from cache)"
)

// Response codes of cb-depsolver, new in the Go implementation. Readers
// recognise them by the words "blocked" and "unresolvable" in the code, so
// variants (package/image) keep those words.
const (
	// PackageBuildBlocked: a build dependency is itself waiting to be
	// built or failed; the message names the blocking targets.
	PackageBuildBlocked ResponseCode = "package build blocked"
	// PackageBuildUnresolvable: a build dependency is not provided by any
	// repository of the buildroot; the message names it.
	PackageBuildUnresolvable ResponseCode = "package build unresolvable"
)
