package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/resolutionflow/ledgerd/audit/verify"
	"github.com/resolutionflow/ledgerd/httpapi"
)

// verifyLog runs `ledgerd verify`: it checks the whole stored log and
// exits 0 when it is intact, 1 naming the first alteration found when it
// is not; with --receipt, it checks a saved receipt offline instead
// (docs/audit-verify.md).
func verifyLog(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	f := newFlags("verify")
	storage := addStorageFlags(f)
	keyFile := addAuditKeyFlag(f)
	keyFlag := f.string("key", "", "", "the ledger's public verifier key, as \"ledgerd audit key\" or GET /audit/key gave it (default: the one of --audit-key-file, or of the embedded key in --data-dir)")
	headFlag := f.string("head", "", "", "also check the log is consistent with this root hash (hex), the hash of a GET /audit/head kept outside earlier")
	checkpointFlag := f.string("checkpoint", "", "", "also check the log is consistent with the signed checkpoint in this `file` (a note, or a GET /audit/head answer), kept outside earlier")
	receiptFlag := f.string("receipt", "", "", "check the receipt (a GET /audit/proof answer) in this `file` offline, with --key, and no database")
	if err := f.parse(args); err != nil {
		return err
	}
	if *receiptFlag != "" {
		if *keyFlag == "" || *headFlag != "" || *checkpointFlag != "" {
			return usageErrorf("--receipt needs --key, and neither --head nor --checkpoint")
		}
		return verifyReceipt(*receiptFlag, *keyFlag, stdout)
	}
	opts := verify.Options{Key: *keyFlag}
	if *headFlag != "" && *checkpointFlag != "" {
		return usageErrorf("give --head or --checkpoint, not both")
	}
	if *headFlag != "" {
		head, err := hex.DecodeString(*headFlag)
		if err != nil || len(head) != 32 {
			return usageErrorf("--head must be a root hash, 64 hex digits: %q", *headFlag)
		}
		opts.Head = head
	}
	if *checkpointFlag != "" {
		note, err := readCheckpointFile(*checkpointFlag)
		if err != nil {
			return usageErrorf("--checkpoint: %v", err)
		}
		opts.Checkpoint = note
	}
	// Opening would make an empty ledger, which would verify.
	if err := storage.requireLedger(); err != nil {
		return err
	}
	if opts.Key == "" {
		if !storage.embedded() && *keyFile == "" {
			return usageErrorf("--key (the verifier key `ledgerd audit key` prints) or --audit-key-file is required with PostgreSQL")
		}
		key, err := storage.auditKey(*keyFile)
		if err != nil {
			return err
		}
		opts.Key = key.Verifier()
	}
	if isTerminal(stderr) {
		opts.Progress = progressLine(stderr, time.Now())
	}

	b, err := storage.open(ctx, logger)
	if err != nil {
		return err
	}
	defer b.close()
	res, err := b.verify(ctx, opts)
	if opts.Progress != nil {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "intact: %d events in %d streams, %d sealed in the Merkle tree, %d checkpoints verified\n", res.Events, res.Streams, res.Leaves, res.Checkpoints)
	if res.Outside != 0 {
		fmt.Fprintf(stdout, "consistent with the tree of size %d kept outside: the log only grew since\n", res.Outside)
	}
	return nil
}

// progressLine returns a progress callback that keeps one line on a
// terminal up to date: the events checked so far and the rate.
func progressLine(w io.Writer, start time.Time) func(int64) {
	return func(events int64) {
		rate := float64(events) / max(time.Since(start).Seconds(), 1e-3)
		fmt.Fprintf(w, "\rverify: %d events checked (%.0f/s)", events, rate)
	}
}

// maxProofFileSize bounds how much of a checkpoint or receipt file is
// read: a receipt holds one event (at most the API's 64 KiB body) and a
// proof of at most 64 hashes.
const maxProofFileSize = 1 << 20

// readProofFile returns the content of a checkpoint or receipt file.
func readProofFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxProofFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(raw) > maxProofFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxProofFileSize)
	}
	return raw, nil
}

// readCheckpointFile returns the signed note in a checkpoint file: the
// note itself (the body of a NATS witness message), or a GET /audit/head
// answer holding it.
func readCheckpointFile(path string) ([]byte, error) {
	raw, err := readProofFile(path)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return raw, nil
	}
	var head struct {
		Checkpoint string `json:"checkpoint"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.Checkpoint == "" {
		return nil, fmt.Errorf("%s is JSON without a \"checkpoint\" note", path)
	}
	return []byte(head.Checkpoint), nil
}

// verifyReceipt checks the receipt in path offline with the verifier key
// vkey.
func verifyReceipt(path, vkey string, stdout io.Writer) error {
	raw, err := readProofFile(path)
	if err != nil {
		return usageErrorf("--receipt: %v", err)
	}
	var in httpapi.Receipt
	if err := json.Unmarshal(raw, &in); err != nil {
		return fmt.Errorf("--receipt %s: not a receipt of GET /audit/proof: %w", path, err)
	}
	r := verify.Receipt{
		Event:        in.Event,
		EnvelopeData: in.Event.Data,
		LeafIndex:    in.LeafIndex,
		TreeSize:     in.TreeSize,
		Checkpoint:   []byte(in.Checkpoint),
	}
	r.Event.Data, r.Event.RawMetadata, r.Event.PrevHash, r.Event.Hash = in.StoredData, in.StoredMetadata, in.PrevHash, in.EventHash
	hashes := append([]string{in.LeafHash, in.RootHash}, in.Proof...)
	decoded := make([][]byte, len(hashes))
	for i, h := range hashes {
		if decoded[i], err = hex.DecodeString(h); err != nil {
			return fmt.Errorf("--receipt %s: hash %q is not hex", path, h)
		}
	}
	r.LeafHash, r.RootHash, r.Proof = decoded[0], decoded[1], decoded[2:]
	if err := verify.CheckReceipt(r, vkey); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "valid: the event at position %d (stream %q, version %d) is leaf %d of the signed tree of size %d\n",
		r.Event.Position, r.Event.Stream, r.Event.Version, r.LeafIndex, r.TreeSize)
	return nil
}
