package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/internal/privatefile"
	"github.com/resolutionflow/ledgerd/shred"
)

// eraseSession erases a session's personal data for an operator, as POST
// /ai-sessions/{session_id}/erase does for an owner or admin: it destroys
// the session's data key, appends SessionDataErased (by the operator: the
// nil user, role "operator"), and deletes the session's stored
// Idempotency-Key responses. The relay of a running server then purges the
// session's messages from NATS (or of the next to start). It needs no
// master key: it destroys a key, and reads nothing sealed.
func eraseSession(ctx context.Context, args []string, stdout io.Writer, logger *slog.Logger) error {
	f := newFlags("erase")
	storage := addStorageFlags(f)
	ids := addSessionFlags(f)
	reasonFlag := f.string("reason", "", "", "why the data is erased, such as a ticket reference (required; kept in the log: no personal data)")
	if err := f.parse(args); err != nil {
		return err
	}
	account, session, err := ids.ids()
	if err != nil {
		return err
	}
	if *reasonFlag == "" {
		return usageErrorf("--reason is required")
	}
	b, err := storage.openLedger(ctx, logger)
	if err != nil {
		return err
	}
	defer b.close()
	operator := domain.Actor{AccountID: account, Role: domain.RoleOperator}
	h := commands.NewHandler(b.raw, nil)
	res, err := h.Erase(ctx, operator, session, *reasonFlag, commands.Trace{RequestID: "erase-" + uuid.NewString()})
	var rule *domain.Error
	if errors.As(err, &rule) && rule.Code != domain.EINTERNAL && rule.Code != domain.EUNAVAILABLE {
		return usageErrorf("%s", rule.Message)
	}
	if err != nil {
		return err
	}
	deleted, err := b.idem.DeleteSession(ctx, account, session)
	if err != nil {
		return fmt.Errorf("erase session %s: %w", session, err)
	}
	logger.Info("session data erased", "account", account, "session", session, "appended", res.Appended, "idempotency_keys_deleted", deleted)
	return json.NewEncoder(stdout).Encode(struct {
		SessionID   uuid.UUID `json:"session_id"`
		NotesErased bool      `json:"notes_erased"`
		Appended    bool      `json:"appended"`
	}{session, true, res.Appended})
}

// keysCommand runs `ledgerd keys rotate`.
func keysCommand(ctx context.Context, args []string, stdout io.Writer, logger *slog.Logger) error {
	if len(args) == 0 || args[0] != "rotate" {
		return usageErrorf("usage: ledgerd keys rotate --new-master-key-file F [flags]")
	}
	return rotateKeys(ctx, args[1:], stdout, logger)
}

// rotateKeys rewraps every data key with a new master key, in one
// transaction, changing no event. In the embedded mode with the master key
// kept in the data directory, the new key then takes the kept one's
// place; otherwise the servers must be given the new file.
func rotateKeys(ctx context.Context, args []string, stdout io.Writer, logger *slog.Logger) error {
	f := newFlags("keys rotate")
	storage := addStorageFlags(f)
	masterKeyFile := addMasterKeyFlag(f)
	newFile := f.string("new-master-key-file", "", "", "file holding the new master key, 64 hex digits (required; make one with: openssl rand -hex 32)")
	if err := f.parse(args); err != nil {
		return err
	}
	if *newFile == "" {
		return usageErrorf("--new-master-key-file is required")
	}
	text, err := readValueFile(*newFile)
	if err != nil {
		return fmt.Errorf("--new-master-key-file: %w", err)
	}
	m, err := shred.ParseMasterKey(text)
	if err != nil {
		return fmt.Errorf("--new-master-key-file: %w", err)
	}
	next := shred.NewKeyring(m)
	b, err := storage.openLedger(ctx, logger)
	if err != nil {
		return err
	}
	defer b.close()
	current, err := storage.masterKey(ctx, b, *masterKeyFile, logger)
	if err != nil {
		return err
	}
	// Every data key must be wrapped by one of the two keys: by the new one
	// when a rotation ran before, or stopped before the kept key was
	// replaced.
	ids, err := b.keys.MasterKeyIDs(ctx)
	if err != nil {
		return err
	}
	for id, count := range ids {
		if id != current.MasterKeyID() && id != next.MasterKeyID() {
			return fmt.Errorf("%d data keys are wrapped by master key %s, neither the current one (%s) nor the new one (%s): give the master key file they were made with", count, id, current.MasterKeyID(), next.MasterKeyID())
		}
	}
	n, err := shred.Rotate(ctx, b.keys, current, next)
	if err != nil {
		return err
	}
	if storage.embedded() && *masterKeyFile == "" {
		if err := replaceKeptMasterKey(*storage.dataDir, text); err != nil {
			return fmt.Errorf("%d data keys are wrapped by the new master key, but it could not replace the one in the data directory: start with --master-key-file %s: %w", n, *newFile, err)
		}
	}
	logger.Info("master key rotated", "data_keys", n, "from", current.MasterKeyID(), "to", next.MasterKeyID())
	_, err = fmt.Fprintf(stdout, "%d data keys rewrapped by master key %s\n", n, next.MasterKeyID())
	return err
}

// replaceKeptMasterKey puts the master key text in the data directory's
// file in place of the one there.
func replaceKeptMasterKey(dataDir, text string) error {
	return privatefile.Write(filepath.Join(dataDir, masterKeyFile), text, true)
}
