package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/internal/privatefile"
)

// auditKeyFile is the name, in the data directory, of the checkpoint
// signing key the embedded mode makes on its first start.
const auditKeyFile = "audit-key"

// defaultAuditKeyName names the keys `ledgerd audit keygen` and the
// embedded mode make; it is the checkpoints' origin line.
const defaultAuditKeyName = "ledgerd"

// addAuditKeyFlag adds --audit-key-file.
func addAuditKeyFlag(f *flags) *string {
	return f.string("audit-key-file", "LEDGER_AUDIT_KEY_FILE", "", "file holding the Ed25519 note signer key that signs the Merkle checkpoints (make one with \"ledgerd audit keygen\"); embedded mode: the one kept in --data-dir when empty")
}

// auditKey returns the checkpoint signing key: the one in file, or in the
// embedded mode the one kept in the data directory (made on first use).
func (s storageFlags) auditKey(file string) (*audit.Key, error) {
	switch {
	case file != "":
		skey, err := readValueFile(file)
		if err != nil {
			return nil, fmt.Errorf("--audit-key-file (LEDGER_AUDIT_KEY_FILE): %w", err)
		}
		return audit.ParseKey(skey)
	case s.embedded():
		return loadOrCreateAuditKey(*s.dataDir)
	}
	return nil, errors.New("--audit-key-file (LEDGER_AUDIT_KEY_FILE) is required with PostgreSQL: make the key once with `ledgerd audit keygen > audit-key`, keep it private and give every server the same file")
}

// loadOrCreateAuditKey returns the key kept in dataDir, making it on first
// use in a file only the owner may read (mode 0600); when two processes
// start at once, both use the first one written.
func loadOrCreateAuditKey(dataDir string) (*audit.Key, error) {
	if err := checkDataDir(dataDir); err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, auditKeyFile)
	skey, err := privatefile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
		made, _, genErr := audit.GenerateKey(defaultAuditKeyName)
		if genErr != nil {
			return nil, genErr
		}
		if err := privatefile.Write(path, made, false); err != nil {
			return nil, fmt.Errorf("write audit key: %w", err)
		}
		skey, err = privatefile.Read(path)
	}
	var exposed *privatefile.ExposedError
	switch {
	case errors.As(err, &exposed):
		return nil, fmt.Errorf("audit key %v; run chmod 600 %s", exposed, path)
	case err != nil:
		return nil, fmt.Errorf("read audit key: %w", err)
	}
	return audit.ParseKey(skey)
}

// auditCommand runs `ledgerd audit key` (print the public verifier key)
// and `ledgerd audit keygen` (print a new signer key).
func auditCommand(_ context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: ledgerd audit key|keygen [flags]")
	}
	switch args[0] {
	case "key":
		f := newFlags("audit key")
		storage := addStoreLocationFlags(f)
		keyFile := addAuditKeyFlag(f)
		if err := f.parse(args[1:]); err != nil {
			return err
		}
		key, err := storage.auditKey(*keyFile)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, key.Verifier())
		return nil
	case "keygen":
		f := newFlags("audit keygen")
		name := f.string("name", "", defaultAuditKeyName, "the key's name, the checkpoints' origin line")
		if err := f.parse(args[1:]); err != nil {
			return err
		}
		skey, _, err := audit.GenerateKey(*name)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, skey)
		return nil
	}
	return fmt.Errorf("unknown audit command %q: usage: ledgerd audit key|keygen [flags]", args[0])
}
