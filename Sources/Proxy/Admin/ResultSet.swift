import Wire

/// A text-only result set, encoded the way psql expects a server's: RowDescription, DataRows,
/// CommandComplete.
struct ResultSet {
    var columns: [String]
    var rows: [[String?]]
    var tag: String

    init(columns: [String], rows: [[String?]], tag: String? = nil) {
        self.columns = columns
        self.rows = rows
        self.tag = tag ?? "SHOW"
    }

    func encode(into writer: inout ByteWriter) {
        encodeDescription(into: &writer)
        encodeRows(into: &writer)
    }

    func encodeDescription(into writer: inout ByteWriter) {
        var description = ByteWriter()
        description.writeInt16(Int16(columns.count))
        for column in columns {
            description.writeCString(column)
            description.writeInt32(0) // no table
            description.writeInt16(0)
            description.writeInt32(25) // text
            description.writeInt16(-1)
            description.writeInt32(-1)
            description.writeInt16(0) // text format
        }
        BackendMessage.rowDescription(description.bytes).encode(into: &writer)
    }

    /// DataRows and CommandComplete (after a Describe already sent the RowDescription).
    func encodeRows(into writer: inout ByteWriter) {
        for row in rows {
            var data = ByteWriter()
            data.writeInt16(Int16(row.count))
            for value in row {
                if let value {
                    let bytes = Array(value.utf8)
                    data.writeInt32(Int32(bytes.count))
                    data.writeBytes(bytes)
                } else {
                    data.writeInt32(-1)
                }
            }
            BackendMessage.dataRow(data.bytes).encode(into: &writer)
        }
        BackendMessage.commandComplete(tag == "SHOW" ? "SHOW" : tag).encode(into: &writer)
    }
}
