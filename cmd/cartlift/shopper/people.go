package shopper

import "strconv"

// Name parts of the synthetic population. Each name has the display form
// and the ASCII form used in e-mail addresses. All addresses are under the
// reserved example.* domains (RFC 2606), so a misconfigured mailer cannot
// reach a real person.
var (
	firstNames = [][2]string{
		{"Anna", "anna"}, {"Lukas", "lukas"}, {"Sofia", "sofia"}, {"Jonas", "jonas"}, {"Emma", "emma"},
		{"Léa", "lea"}, {"Mateo", "mateo"}, {"Olivia", "olivia"}, {"Noah", "noah"}, {"Zoë", "zoe"},
		{"Liam", "liam"}, {"Mia", "mia"}, {"Finn", "finn"}, {"Chloé", "chloe"}, {"Ava", "ava"},
		{"Elias", "elias"}, {"Giulia", "giulia"}, {"Hugo", "hugo"}, {"Maja", "maja"}, {"Ethan", "ethan"},
		{"Isabella", "isabella"}, {"Jakub", "jakub"}, {"Lucía", "lucia"}, {"Oskar", "oskar"}, {"Grace", "grace"},
		{"Daniel", "daniel"}, {"Ines", "ines"}, {"Marco", "marco"}, {"Sara", "sara"}, {"William", "william"},
		{"Aoife", "aoife"}, {"Pablo", "pablo"},
	}
	lastNames = [][2]string{
		{"Müller", "mueller"}, {"Schmidt", "schmidt"}, {"Dubois", "dubois"}, {"Rossi", "rossi"}, {"García", "garcia"},
		{"Jansen", "jansen"}, {"Kowalski", "kowalski"}, {"Murphy", "murphy"}, {"Smith", "smith"}, {"Johnson", "johnson"},
		{"Williams", "williams"}, {"Brown", "brown"}, {"Martínez", "martinez"}, {"Nguyen", "nguyen"}, {"Fischer", "fischer"},
		{"Bernard", "bernard"}, {"Bianchi", "bianchi"}, {"de Vries", "devries"}, {"Nowak", "nowak"}, {"O'Brien", "obrien"},
		{"Davis", "davis"}, {"Lopez", "lopez"}, {"Weber", "weber"}, {"Moreau", "moreau"}, {"Romano", "romano"},
		{"Bakker", "bakker"}, {"Wójcik", "wojcik"}, {"Kelly", "kelly"}, {"Taylor", "taylor"}, {"Anderson", "anderson"},
		{"Becker", "becker"}, {"Lefèvre", "lefevre"},
	}
	mailDomains = []string{"example.com", "example.org", "example.net"}

	companyStems = []string{
		"Nordwind", "Bergmann", "Alpen", "Hanse", "Lumen", "Atlas", "Vega", "Keystone", "Summit", "Harbor",
		"Blue Ridge", "Lakeside", "Orion", "Meridian", "Falcon", "Cedar", "Redwood", "Polar", "Granite", "Delta",
	}
	companyKinds = []string{"Supply", "Industrial", "Office Solutions", "Hospitality", "Logistics", "Facilities", "Retail Group", "Engineering"}

	// segments of B2C customers, by weight in per mille.
	segments = []struct {
		name   string
		weight uint64
	}{{"new", 250}, {"regular", 600}, {"vip", 80}, {"lapsed", 70}}
)

// traits are a registered customer's stable attributes, as indices into
// the tables above; the strings are built only when an event needs them.
// They derive from the customer's index, Sites and B2BShare alone, not
// from the seed: customer c-000123 is the same person in every run with
// the same sites.
type traits struct {
	i       int
	site    int // index into Sim.sites
	b2b     bool
	consent bool
	first   uint32
	last    uint32
	domain  uint32
	zone    uint32 // index into the site's zones
	segment string
	legal   [3]uint32 // stem, kind, legal form
}

func (s *Sim) traitsOf(i int) traits {
	h := mix(uint64(i) ^ 0x5eed_c0ffee)
	t := traits{i: i}
	t.site = int(h % uint64(len(s.sites)))
	h = mix(h)
	t.b2b = float64(h%1_000_000) < s.o.B2BShare*1_000_000
	h = mix(h)
	t.first = uint32(h % uint64(len(firstNames)))
	t.last = uint32((h >> 16) % uint64(len(lastNames)))
	t.domain = uint32((h >> 32) % uint64(len(mailDomains)))
	h = mix(h)
	t.zone = uint32(h % uint64(len(s.sites[t.site].zones)))
	h = mix(h)
	t.consent = h%100 < 85
	h = mix(h)
	if t.b2b {
		t.segment = "business"
		t.legal = [3]uint32{
			uint32(h % uint64(len(companyStems))),
			uint32((h >> 16) % uint64(len(companyKinds))),
			uint32((h >> 32) % uint64(len(s.sites[t.site].forms))),
		}
	} else {
		w := h % 1000
		for _, sg := range segments {
			if w < sg.weight {
				t.segment = sg.name
				break
			}
			w -= sg.weight
		}
	}
	return t
}

func (t *traits) name() string {
	return firstNames[t.first][0] + " " + lastNames[t.last][0]
}

func (t *traits) email() string {
	return firstNames[t.first][1] + "." + lastNames[t.last][1] + "." + strconv.Itoa(t.i) + "@" + mailDomains[t.domain]
}

func (s *Sim) localeZone(t *traits) localeZone { return s.sites[t.site].zones[t.zone] }

// legalEntity is a B2B buyer's company name; "" for consumers.
func (s *Sim) legalEntity(t *traits) string {
	if !t.b2b {
		return ""
	}
	return companyStems[t.legal[0]] + " " + companyKinds[t.legal[1]] + " " + s.sites[t.site].forms[t.legal[2]]
}

// mix is the splitmix64 finaliser: a fast, well-spread 64-bit hash.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
