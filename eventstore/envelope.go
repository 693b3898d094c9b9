package eventstore

import (
	"strconv"
	"time"
)

// AppendJSON appends e's envelope, the JSON object json.Marshal gives of
// e, to b, built without reflection, with e.Data and the stored metadata
// (e.RawMetadata, or e.Metadata encoded when that is empty) copied as
// they are: both are valid JSON, since both stores refuse to hold
// anything else (PostgreSQL's json columns, SQLite's json_valid checks).
// The relay encodes every event it publishes with it.
//
// When e.RawMetadata is what the store wrote (Metadata.AppendJSON) and
// e.Data is what json.Marshal writes (compact, HTML characters escaped), as
// eventcodec.Encode writes it, the result is byte for byte what
// json.Marshal gives; data or metadata stored in another form (events
// written while those columns were jsonb) keep that form.
func (e Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"stream":`...)
	b = appendJSONString(b, e.Stream)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, e.Version, 10)
	b = append(b, `,"position":`...)
	b = strconv.AppendInt(b, e.Position, 10)
	b = append(b, `,"recorded_at":"`...)
	b = e.RecordedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","data":`...)
	if len(e.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Data...)
	}
	b = append(b, `,"metadata":`...)
	if len(e.RawMetadata) == 0 {
		b = e.Metadata.AppendJSON(b)
	} else {
		b = append(b, e.RawMetadata...)
	}
	return append(b, '}')
}
