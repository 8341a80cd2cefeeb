package image

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/cloud-builder/cb/internal/buildroot"
)

// ErrRefused means an image description uses something kiwi would turn
// against the runner: a local repository, a host path, a script kiwi runs
// outside the image root, or an element or attribute the allow-list does
// not know.
var ErrRefused = errors.New("image description refused")

// maxDescriptionSize bounds the KIWI file read for the check.
const maxDescriptionSize = 4 << 20

// KeyringDir is the only host directory a <signing key="file://..."/> may
// name: it holds the public archive keyrings of the distribution.
const KeyringDir = "/usr/share/keyrings"

// allowed lists every element the check accepts, with its attributes.
// It follows kiwi's schema (kiwi/schema/kiwi.rng) minus what reaches the
// build host instead of the image root:
//
//   - <include from=...> pulls in another file by path;
//   - <type editbootconfig/editbootinstall> are scripts kiwi runs outside
//     the image root, as root of the runner;
//   - <type integrity_keyfile/metadata_path>, <bootloader grub_template>
//     and <type boot> name files or directories on the host;
//   - <type derived_from> loads a base image, from a local path too;
//   - <repository customize> is a script kiwi runs on the host;
//   - <type xen_server>, <type luks> (a keyfile given as file://) are
//     kept out for the same reason;
//   - <image id> is written by kiwi from the host into the image root's
//     etc/ImageID, following any link the overlay or a script put there;
//   - <packages type="uninstall|delete"> run the package manager in a
//     plain chroot after config.sh could rewrite the removal scripts.
//
// Attributes whose values are checked further are in checkValue. An
// element or attribute kiwi adds in a later schema is refused until it is
// reviewed and listed here.
var allowed = map[string][]string{
	"image":                    {"displayname", "name", "schemaversion", "xsi:noNamespaceSchemaLocation", "xsi:schemaLocation"},
	"description":              {"type"},
	"author":                   nil,
	"contact":                  nil,
	"specification":            nil,
	"license":                  nil,
	"profiles":                 nil,
	"profile":                  {"arch", "description", "import", "name"},
	"requires":                 {"profile"},
	"preferences":              {"arch", "profiles"},
	"version":                  nil,
	"packagemanager":           nil,
	"locale":                   nil,
	"keytable":                 nil,
	"timezone":                 nil,
	"release-version":          nil,
	"rpm-check-signatures":     nil,
	"rpm-excludedocs":          nil,
	"rpm-locale-filtering":     nil,
	"bootsplash-theme":         nil,
	"bootloader-theme":         nil,
	"showlicense":              nil,
	"repository":               {"alias", "components", "distribution", "imageinclude", "imageonly", "package_gpgcheck", "password", "priority", "profiles", "repository_gpgcheck", "sourcetype", "type", "use_for_bootstrap", "username"},
	"source":                   {"path"},
	"signing":                  {"key"},
	"packages":                 {"bootstrap_package", "patternType", "profiles", "type"},
	"package":                  {"arch", "bootdelete", "bootinclude", "name"},
	"archive":                  {"bootinclude", "name", "target_dir"},
	"namedCollection":          {"arch", "name"},
	"collectionModule":         {"arch", "enable", "name", "stream"},
	"product":                  {"arch", "name"},
	"ignore":                   {"arch", "name"},
	"users":                    {"profiles"},
	"user":                     {"groups", "home", "id", "name", "password", "pwdformat", "realname", "shell"},
	"drivers":                  {"profiles"},
	"strip":                    {"profiles", "type"},
	"file":                     {"arch", "name"},
	"type":                     typeAttrs,
	"bootloader":               {"console", "name", "serial_line", "targettype", "timeout", "timeout_style"},
	"size":                     {"additive", "unit", "unpartitioned"},
	"systemdisk":               {"name", "preferlvm"},
	"volume":                   {"copy_on_write", "filesystem_check", "freespace", "label", "mountpoint", "name", "size"},
	"partitions":               nil,
	"partition":                {"clone", "filesystem", "mountpoint", "name", "partition_name", "partition_type", "size"},
	"luksformat":               nil,
	"option":                   {"name", "value"},
	"installmedia":             nil,
	"initrd":                   {"action"},
	"dracut":                   {"module"},
	"machine":                  {"HWversion", "arch", "guestOS", "max_cpu", "max_memory", "memory", "min_cpu", "min_memory", "ncpus", "ovftype"},
	"vmconfig-entry":           nil,
	"vmdisk":                   {"controller", "device", "diskmode", "disktype", "id"},
	"vmdvd":                    {"controller", "id"},
	"vmnic":                    {"driver", "interface", "mac", "mode"},
	"vagrantconfig":            {"boxname", "embedded_vagrantfile", "provider", "virtualbox_guest_additions_present", "virtualsize"},
	"containerconfig":          {"additionalnames", "maintainer", "name", "tag", "user", "workingdir"},
	"entrypoint":               {"clear", "execute"},
	"subcommand":               {"clear", "execute"},
	"argument":                 {"name"},
	"expose":                   nil,
	"port":                     {"number"},
	"environment":              nil,
	"env":                      {"name", "value"},
	"labels":                   nil,
	"label":                    {"name", "value"},
	"history":                  {"application_id", "author", "created_by", "launcher", "package_version"},
	"oemconfig":                nil,
	"oem-boot-title":           nil,
	"oem-bootwait":             nil,
	"oem-device-filter":        nil,
	"oem-inplace-recovery":     nil,
	"oem-kiwi-initrd":          nil,
	"oem-multipath-scan":       nil,
	"oem-nic-filter":           nil,
	"oem-partition-install":    nil,
	"oem-reboot":               nil,
	"oem-reboot-interactive":   nil,
	"oem-recovery":             nil,
	"oem-recovery-part-size":   nil,
	"oem-recoveryID":           nil,
	"oem-resize":               nil,
	"oem-resize-once":          nil,
	"oem-shutdown":             nil,
	"oem-shutdown-interactive": nil,
	"oem-silent-boot":          nil,
	"oem-silent-install":       nil,
	"oem-silent-verify":        nil,
	"oem-skip-verify":          nil,
	"oem-swap":                 nil,
	"oem-swapname":             nil,
	"oem-swapsize":             nil,
	"oem-systemsize":           nil,
	"oem-unattended":           nil,
	"oem-unattended-id":        nil,
	"oem-vmcp-parmfile":        nil,
}

// typeAttrs are the <type> attributes allowed: kiwi's list without boot,
// derived_from, editbootconfig, editbootinstall, integrity_keyfile,
// metadata_path and xen_server.
var typeAttrs = []string{
	"boot_clone", "bootfilesystem", "bootkernel", "bootpartition", "bootpartsize", "bootprofile",
	"btrfs_quota_groups", "btrfs_root_is_readonly_snapshot", "btrfs_root_is_snapshot", "bundle_format",
	"compressed", "devicepersistency", "disk_start_sector", "dosparttable_extended_layout",
	"efifatimagesize", "efipartsize", "efiparttable", "embed_integrity_metadata", "embed_verity_metadata",
	"ensure_empty_tmpdirs", "filesystem", "firmware", "flags", "force_mbr", "format", "formatoptions",
	"fscreateoptions", "fsmountoptions", "gcelicense", "gpt_hybrid_mbr", "hybridpersistent",
	"hybridpersistent_filesystem", "image", "initrd_system", "install_continue_on_timeout", "installboot",
	"installiso", "installprovidefailsafe", "installpxe", "installstick", "integrity_legacy_hmac",
	"integrity_metadata_key_description", "kernelcmdline", "luks", "luksOS", "luks_version", "mdraid",
	"mediacheck", "overlayroot", "overlayroot_readonly_partsize", "overlayroot_write_partition", "primary",
	"publisher", "ramonly", "root_clone", "rootfs_label", "selinux_policy", "spare_part", "spare_part_fs",
	"spare_part_fs_attributes", "spare_part_is_last", "spare_part_mountpoint", "squashfscompression",
	"standalone_integrity", "target_blocksize", "target_removable", "verity_blocks", "vga", "vhdfixedtag",
	"volid", "wwid_wait_timeout",
}

// refusedWhy explains the refusals that are not just "unknown", so the
// build's response says what the element or attribute would have done.
var refusedWhy = map[string]string{
	"include":                  "it reads another file by path",
	"type/editbootconfig":      "it names a script kiwi runs on the build host, outside the image root",
	"type/editbootinstall":     "it names a script kiwi runs on the build host, outside the image root",
	"type/integrity_keyfile":   "it names a file on the build host",
	"type/metadata_path":       "it names a directory on the build host",
	"type/boot":                "it names a boot description directory on the build host",
	"type/derived_from":        "it loads a base image, from a local path too",
	"type/xen_server":          "it is not supported by this builder",
	"bootloader/grub_template": "it names a file on the build host",
	"repository/customize":     "it names a script kiwi runs on the build host",
	"machine/xen_loader":       "it is not supported by this builder",
	"image/id":                 "kiwi writes it to etc/ImageID of the image root from the host, following links the overlay or a script put there",
}

// descriptionFiles are the KIWI files of dir that kiwi may read: config.xml
// and every *.kiwi (kiwi picks one of them; all are checked).
func descriptionFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("check image description: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() == "config.xml" || strings.HasSuffix(e.Name(), ".kiwi") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: no config.xml or .kiwi file", ErrRefused)
	}
	return names, nil
}

// CheckDescription checks the KIWI files of the description directory dir
// against the allow-list, before kiwi reads them: every element and
// attribute must be one kiwi keeps inside the image root, repositories
// must be http(s) URLs, signing keys http(s) URLs or keyrings below
// KeyringDir, and archive and Vagrantfile names plain file names of the
// description. Run it on the copy kiwi gets (after mirror substitution).
// The error wraps ErrRefused and names the file, line, element and
// attribute.
func CheckDescription(dir string) error {
	_, err := checkDescription(dir)
	return err
}

// checkDescription is CheckDescription that also returns the
// repositories the description names, with their signing keys.
func checkDescription(dir string) ([]buildroot.Repository, error) {
	names, err := descriptionFiles(dir)
	if err != nil {
		return nil, err
	}
	var repos []buildroot.Repository
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("check image description: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(f, maxDescriptionSize+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("check image description %s: %w", name, err)
		}
		if len(data) > maxDescriptionSize {
			return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrRefused, name, maxDescriptionSize)
		}
		r, err := checkKiwi(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		repos = append(repos, r...)
	}
	return repos, nil
}

// checkKiwi checks one KIWI document and returns its repositories.
func checkKiwi(data []byte) ([]buildroot.Repository, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	var stack []string
	var repos []buildroot.Repository
	root := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		line, _ := d.InputPos()
		refuse := func(format string, v ...any) error {
			return fmt.Errorf("%w: line %d: %s", ErrRefused, line, fmt.Sprintf(format, v...))
		}
		if err != nil {
			return nil, fmt.Errorf("%w: not well-formed XML: %w", ErrRefused, err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			// A DOCTYPE can declare external entities that read host files.
			return nil, refuse("<!%s> declarations are not allowed", firstWord(string(t)))
		case xml.ProcInst:
			if t.Target != "xml" {
				return nil, refuse("processing instruction <?%s?> is not allowed", t.Target)
			}
		case xml.StartElement:
			name := t.Name.Local
			if t.Name.Space != "" {
				return nil, refuse("element <%s> in namespace %q is not allowed", name, t.Name.Space)
			}
			if len(stack) == 0 {
				if root || name != "image" {
					return nil, refuse("the document element must be a single <image>, not <%s>", name)
				}
				root = true
			}
			attrs, ok := allowed[name]
			if !ok {
				return nil, refuse("element <%s> is not allowed%s", name, why(name))
			}
			for _, a := range t.Attr {
				an := attrName(a.Name)
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					if a.Value != "http://www.w3.org/2001/XMLSchema-instance" {
						return nil, refuse("<%s> declares namespace %q; only the XML Schema instance namespace is allowed", name, a.Value)
					}
					continue
				}
				if !contains(attrs, an) {
					return nil, refuse("attribute %s of <%s> is not allowed%s", an, name, why(name+"/"+an))
				}
				if err := checkValue(name, an, a.Value); err != nil {
					return nil, refuse("attribute %s=%q of <%s>: %s", an, a.Value, name, err)
				}
				switch name + "/" + an {
				case "source/path":
					repos = append(repos, buildroot.Repository{Path: a.Value})
				case "signing/key":
					if len(repos) > 0 && len(stack) > 0 && stack[len(stack)-1] == "source" {
						repos[len(repos)-1].SigningKeys = append(repos[len(repos)-1].SigningKeys, a.Value)
					} else {
						return nil, refuse("<signing> outside a <source>")
					}
				}
			}
			stack = append(stack, name)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	if !root {
		return nil, fmt.Errorf("%w: no <image> element", ErrRefused)
	}
	return repos, nil
}

// attrName is an attribute's name as written: encoding/xml resolves the
// xsi prefix to its namespace URL.
func attrName(n xml.Name) string {
	switch n.Space {
	case "":
		return n.Local
	case "http://www.w3.org/2001/XMLSchema-instance", "xsi":
		return "xsi:" + n.Local
	}
	return n.Space + ":" + n.Local
}

func why(key string) string {
	if w := refusedWhy[key]; w != "" {
		return ": " + w
	}
	return " by the image description allow-list"
}

func firstWord(s string) string {
	if i := strings.IndexAny(s, " \t\r\n["); i >= 0 {
		return s[:i]
	}
	return s
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// plainName is a file name of the description directory itself.
var plainName = regexp.MustCompile(`^[A-Za-z0-9_+][A-Za-z0-9_.+~-]{0,200}$`)

// checkValue checks the attribute values that name repositories, keys or
// files.
func checkValue(elem, attr, v string) error {
	switch elem + "/" + attr {
	case "source/path":
		return remoteURL(v, "repository")
	case "signing/key":
		u, err := url.Parse(v)
		if err == nil && u.Scheme == "file" && u.Host == "" {
			dir, file := path.Split(u.Path)
			if path.Clean(dir) == KeyringDir && plainName.MatchString(file) && u.RawQuery == "" && u.Fragment == "" {
				return nil
			}
			return fmt.Errorf("a local signing key must be a keyring in %s", KeyringDir)
		}
		return remoteURL(v, "signing key")
	case "archive/name", "vagrantconfig/embedded_vagrantfile":
		if !plainName.MatchString(v) {
			return errors.New("must be the name of a file in the description directory (no path)")
		}
	case "archive/target_dir", "volume/mountpoint", "partition/mountpoint", "type/spare_part_mountpoint", "user/home":
		if v != "" && (!strings.HasPrefix(v, "/") || hasDotDot(v)) {
			return errors.New("must be an absolute path in the image without ..")
		}
	case "volume/name":
		if hasDotDot(v) {
			return errors.New("must not contain ..")
		}
	case "packages/type":
		// kiwi removes these after config.sh ran, with the package
		// manager in a plain chroot: the removal scripts in the image
		// root are the description's by then.
		if v == "uninstall" || v == "delete" {
			return errors.New("package removal after config.sh is not allowed; remove packages in config.sh")
		}
	case "type/luks":
		if strings.Contains(v, "://") {
			return errors.New("a key file on the build host is not allowed; give a passphrase")
		}
	}
	return nil
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

// remoteURL accepts http and https URLs with a host; kiwi's local schemes
// (dir, file, iso, this, obs, obsrepositories) and plain paths read from
// or bind-mount the build host.
func remoteURL(v, what string) error {
	if strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("the %s URL contains white space or control characters", what)
	}
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("the %s URL does not parse", what)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		if u.Scheme == "" {
			return fmt.Errorf("a local %s path is not allowed; use an http or https URL", what)
		}
		return fmt.Errorf("%s URLs of scheme %q are not allowed; use an http or https URL", what, u.Scheme)
	}
	return nil
}
