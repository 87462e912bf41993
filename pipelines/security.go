package pipelines

// Security holds the settings of a secured Kafka cluster, as the kafka
// plugin's parameters of the same names take them: TLS, mutual TLS and
// SASL. The zero value is PLAINTEXT.
type Security struct {
	Protocol     string // security_protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
	Mechanism    string // sasl_mechanism
	Username     string // sasl_username
	Password     string // sasl_password
	PasswordFile string // sasl_password_file
	Token        string // sasl_oauthbearer_token
	TokenFile    string // sasl_oauthbearer_token_file
	CALocation   string // ssl_ca_location
	CertLocation string // ssl_certificate_location
	KeyLocation  string // ssl_key_location
	// SkipEndpointIdentification is ssl_endpoint_identification = false:
	// brokers' certificates are not checked against their names.
	SkipEndpointIdentification bool
}

// fields pairs each parameter name with its setting.
func (s *Security) fields() map[string]*string {
	return map[string]*string{
		"security_protocol": &s.Protocol, "sasl_mechanism": &s.Mechanism, "sasl_username": &s.Username,
		"sasl_password": &s.Password, "sasl_password_file": &s.PasswordFile,
		"sasl_oauthbearer_token": &s.Token, "sasl_oauthbearer_token_file": &s.TokenFile,
		"ssl_ca_location": &s.CALocation, "ssl_certificate_location": &s.CertLocation, "ssl_key_location": &s.KeyLocation,
	}
}

// addTo sets the kafka plugin's parameters of the settings given.
func (s Security) addTo(params map[string]any) {
	for name, v := range s.fields() {
		if *v != "" {
			params[name] = *v
		}
	}
	if s.SkipEndpointIdentification {
		params["ssl_endpoint_identification"] = false
	}
}
