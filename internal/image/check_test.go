package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloud-builder/cb/internal/target"
)

// kiwiDoc wraps body in an image document like the shipped example.
func kiwiDoc(body string) string {
	return `<?xml version="1.0" encoding="utf-8"?>
<image schemaversion="7.5" name="hostile">
    <description type="system"><author>x</author><contact>x</contact><specification>x</specification></description>
    <preferences>
        <version>1.0.0</version>
        <packagemanager>apt</packagemanager>
        <type image="tbz"/>
    </preferences>
` + body + `
</image>`
}

const goodRepo = `<repository type="apt-deb" alias="bookworm" distribution="bookworm" components="main">
        <source path="http://deb.example.org/debian"><signing key="file:///usr/share/keyrings/debian-archive-keyring.gpg"/></source>
    </repository>`

func checkDoc(t *testing.T, name, doc string) error {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return CheckDescription(dir)
}

func TestCheckDescriptionAccepts(t *testing.T) {
	// The shipped example, with the mirror as the runner substitutes it.
	src, err := os.ReadFile(filepath.Join(exampleDir, "appliance.kiwi"))
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.ReplaceAll(string(src), "@DEBIAN_MIRROR@", "http://deb.example.org/debian")
	if err := checkDoc(t, "appliance.kiwi", doc); err != nil {
		t.Fatalf("the example image is refused: %v", err)
	}
	full := kiwiDoc(goodRepo + `
    <profiles><profile name="disk" description="a disk"/></profiles>
    <users><user name="root" password="x" home="/root" groups="root"/></users>
    <packages type="image" profiles="disk"><package name="netbase"/><archive name="root.tar.gz" target_dir="/opt"/></packages>`)
	full = strings.Replace(full, `<type image="tbz"/>`, `<type image="oem" filesystem="ext4" kernelcmdline="quiet"><bootloader name="grub2" timeout="1"/><systemdisk><volume name="home" mountpoint="/home"/></systemdisk></type>`, 1)
	full = strings.Replace(full, `<image `, `<image xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="kiwi.xsd" `, 1)
	if err := checkDoc(t, "config.xml", full); err != nil {
		t.Fatalf("a disk image description is refused: %v", err)
	}
}

// TestCheckDescriptionRefuses feeds hostile descriptions to the check:
// each must be refused with an error naming what was refused.
func TestCheckDescriptionRefuses(t *testing.T) {
	repo := func(path string) string {
		return `<repository type="apt-deb" alias="r" distribution="bookworm"><source path="` + path + `"/></repository>`
	}
	withType := func(attrs string) string {
		return strings.Replace(kiwiDoc(goodRepo), `<type image="tbz"/>`, `<type image="oem" `+attrs+`/>`, 1)
	}
	tests := []struct {
		name string
		doc  string
		want string // in the error
	}{
		{"dir repository", kiwiDoc(repo("dir:///var/lib/cb")), `scheme "dir"`},
		{"file repository", kiwiDoc(repo("file:///srv/repo")), `scheme "file"`},
		{"iso repository", kiwiDoc(repo("iso:///srv/x.iso")), `scheme "iso"`},
		{"this repository", kiwiDoc(repo("this://../../etc")), `scheme "this"`},
		{"obs repository", kiwiDoc(repo("obs://Debian:12/standard")), `scheme "obs"`},
		{"host path repository", kiwiDoc(repo("/etc")), "local repository path"},
		{"host signing key", kiwiDoc(`<repository type="apt-deb"><source path="http://x.org/d"><signing key="file:///etc/cb/runner.key"/></source></repository>`), "keyring in /usr/share/keyrings"},
		{"signing key escaping the keyrings", kiwiDoc(`<repository type="apt-deb"><source path="http://x.org/d"><signing key="file:///usr/share/keyrings/../../../etc/shadow"/></source></repository>`), "keyring in /usr/share/keyrings"},
		{"editbootconfig", withType(`editbootconfig="edit_boot_config.sh"`), "editbootconfig of <type>"},
		{"editbootinstall", withType(`editbootinstall="edit_boot_install.sh"`), "editbootinstall of <type>"},
		{"integrity keyfile", withType(`integrity_keyfile="/etc/ssh/ssh_host_ed25519_key"`), "integrity_keyfile"},
		{"derived_from", withType(`derived_from="dir:///var/lib/images/base"`), "derived_from"},
		{"luks key file", withType(`luks="file:///etc/shadow"`), "luks"},
		{"repository customize script", kiwiDoc(`<repository type="apt-deb" customize="/tmp/x.sh"><source path="http://x.org/d"/></repository>`), "customize of <repository>"},
		{"include", kiwiDoc(goodRepo + `<include from="this://../../../etc/x.xml"/>`), "element <include>"},
		{"xinclude", strings.Replace(kiwiDoc(goodRepo+`<xi:include href="/etc/shadow" parse="text"/>`), "<image ", `<image xmlns:xi="http://www.w3.org/2001/XInclude" `, 1), "namespace"},
		{"external entity", `<?xml version="1.0"?><!DOCTYPE image [<!ENTITY s SYSTEM "file:///etc/shadow">]>` + kiwiDoc(goodRepo)[len(`<?xml version="1.0" encoding="utf-8"?>`):], "<!DOCTYPE>"},
		{"archive with a path", kiwiDoc(goodRepo + `<packages type="image"><archive name="../../../../etc/shadow"/></packages>`), "archive"},
		{"archive out of the image root", kiwiDoc(goodRepo + `<packages type="image"><archive name="root.tar" target_dir="/../../../"/></packages>`), "target_dir"},
		{"vagrantfile from the host", kiwiDoc(goodRepo + `<preferences><type image="oem"><vagrantconfig provider="libvirt" virtualsize="1" embedded_vagrantfile="/etc/shadow"/></type></preferences>`), "embedded_vagrantfile"},
		{"grub template", strings.Replace(kiwiDoc(goodRepo), `<type image="tbz"/>`, `<type image="oem"><bootloader name="grub2" grub_template="/etc/shadow"/></type>`, 1), "grub_template"},
		{"image id", strings.Replace(kiwiDoc(goodRepo), `<image `, `<image id="0123456789" `, 1), "attribute id of <image>"},
		{"package removal after config.sh", kiwiDoc(goodRepo + `<packages type="uninstall"><package name="apt"/></packages>`), "package removal"},
		{"unknown element", kiwiDoc(goodRepo + `<hostcopy from="/etc"/>`), "element <hostcopy>"},
		{"processing instruction", kiwiDoc(goodRepo + `<?exec rm -rf /?>`), "processing instruction"},
		{"not an image", `<foo/>`, "single <image>"},
		{"not XML", `<image><`, "not well-formed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkDoc(t, "config.xml", tc.doc)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("err = %v, want ErrRefused", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "config.xml") {
				t.Errorf("error %q does not say %q in config.xml", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// TestCheckDescriptionEveryFile checks that a harmless config.xml does
// not hide a hostile .kiwi file next to it: kiwi may read either.
func TestCheckDescriptionEveryFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(kiwiDoc(goodRepo)), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := kiwiDoc(`<repository type="apt-deb"><source path="dir:///"/></repository>`)
	if err := os.WriteFile(filepath.Join(dir, "other.kiwi"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckDescription(dir); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "other.kiwi") {
		t.Fatalf("err = %v, want other.kiwi refused", err)
	}
	if err := CheckDescription(t.TempDir()); !errors.Is(err, ErrRefused) {
		t.Fatalf("empty description: err = %v", err)
	}
}

// TestBuildRefusesHostileDescription runs Build on hostile descriptions:
// each is refused before kiwi runs (kiwi here is a program that does not
// exist, so a build that got as far as kiwi fails differently), the log
// says why, and no scratch is left behind.
func TestBuildRefusesHostileDescription(t *testing.T) {
	old := Kiwi
	Kiwi = filepath.Join(t.TempDir(), "kiwi-must-not-run")
	t.Cleanup(func() { Kiwi = old })
	for name, doc := range map[string]string{
		"dir repository": kiwiDoc(`<repository type="apt-deb"><source path="dir:///var/lib/cb"/></repository>`),
		"host path":      kiwiDoc(`<repository type="apt-deb"><source path="/etc"/></repository>`),
		// Its packages' maintainer scripts would run as root in kiwi's
		// chroot: only the runner's repositories are allowed.
		"foreign repository": kiwiDoc(`<repository type="apt-deb" distribution="x"><source path="http://packages.invalid/debian"/></repository>`),
		"editbootconfig":     strings.Replace(kiwiDoc(goodRepo), `<type image="tbz"/>`, `<type image="oem" editbootconfig="edit.sh"/>`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			desc := t.TempDir()
			if err := os.WriteFile(filepath.Join(desc, "config.xml"), []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			tgt, err := target.New(root, "projects/images/hostile", "standard", "x86_64")
			if err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			res, err := Build(context.Background(), Options{
				Description: desc, Target: tgt, BundleID: "1", Log: &log,
				CacheDir: filepath.Join(t.TempDir(), "cache"), Logger: testLogger(t),
			})
			if !errors.Is(err, ErrRefused) || res != nil {
				t.Fatalf("Build = %v, %v; want ErrRefused", res, err)
			}
			if !strings.Contains(log.String(), "image description refused") || strings.Contains(log.String(), "kiwi-must-not-run") {
				t.Errorf("log:\n%s", log.String())
			}
			if _, err := os.Stat(tgt.Work()); !os.IsNotExist(err) {
				t.Errorf("work directory left: %v", err)
			}
		})
	}
}
