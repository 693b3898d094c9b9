package eventstore

import (
	"strconv"
	"time"
)

// AppendJSON appends e's envelope, the JSON object json.Marshal gives of
// e, to b, built without reflection: e.Data copied as it is (valid JSON:
// both stores refuse to hold anything else, and opening sealed notes
// writes JSON) and e.Metadata encoded by Metadata.AppendJSON, as readers
// see it (opened: the stored bytes, RawMetadata, may hold the client
// address sealed). The relay encodes every event it publishes with it.
//
// When e.Data is what json.Marshal writes (compact, HTML characters
// escaped), as eventcodec.Encode writes it, the result is byte for byte
// what json.Marshal gives; data stored in another form (events written
// while the column was jsonb) keeps that form.
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
	b = e.Metadata.AppendJSON(b)
	return append(b, '}')
}
