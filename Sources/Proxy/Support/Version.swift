public enum CausewayVersion {
    public static let string = "0.1.0"
}
