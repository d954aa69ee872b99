"""Generate the bundled example corpus (examples/corpus/): a small web-like crawl written for thresher.

Deterministic (seeded, gzip mtime 0): rerunning gives byte-identical files.

    python examples/make_corpus.py
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "corpus"

EN = {
    "cooking": [
        "A good stock starts with cold water, because heat extracts flavour slowly from the bones and vegetables.",
        "Toasting whole spices in a dry pan for a minute releases oils that ground spices lost long ago.",
        "Resting a roast after it leaves the oven lets the juices settle back into the meat instead of the board.",
        "Salt the pasta water generously, since it is the only chance to season the noodles from within.",
        "Bread dough needs time more than effort, and a slow rise in the refrigerator deepens its taste.",
        "A sharp knife is safer than a dull one, because it goes where you aim it instead of slipping.",
        "Acid brightens a heavy dish, so a squeeze of lemon often fixes a soup that tastes flat.",
        "Onions cooked gently for half an hour turn sweet and golden, which is the base of many sauces.",
        "When frying, crowding the pan lowers the temperature and the food steams instead of browning.",
        "Fresh herbs such as basil belong at the end of cooking, while rosemary and thyme can simmer for hours.",
    ],
    "astronomy": [
        "On a clear night away from city lights, the band of the Milky Way is easy to see with the naked eye.",
        "Jupiter's four largest moons were discovered by Galileo in 1610 with a small homemade telescope.",
        "A light year measures distance, not time: it is how far light travels in one year, about ten trillion kilometres.",
        "The planets stay close to a line across the sky called the ecliptic, because the solar system is flat.",
        "Binoculars reveal craters on the Moon, which look sharpest along the terminator between day and night.",
        "Meteor showers happen when Earth crosses the trail of dust left behind by a comet.",
        "Red stars are cooler than blue ones, and the colour of a star tells astronomers its surface temperature.",
        "The Andromeda galaxy is the most distant object most people can see without any optical aid.",
        "Saturn's rings are made of countless pieces of ice, from grains of dust to blocks as large as houses.",
        "Astronomers measure the distance to nearby stars by watching them shift against the background over a year.",
    ],
    "gardening": [
        "Tomatoes need at least six hours of direct sun a day, and they prefer deep watering to frequent sprinkling.",
        "Compost improves both sandy and clay soils, because organic matter holds water and lets air move freely.",
        "Mulch keeps roots cool in summer, slows the growth of weeds and reduces how often you need to water.",
        "Planting beans after a crop of cabbage helps, since beans add nitrogen that hungry brassicas used up.",
        "Most herbs prefer poor, well drained soil, and too much fertiliser makes them grow leafy but bland.",
        "Early morning is the best time to water, as less is lost to evaporation and leaves dry before night.",
        "Pruning fruit trees in late winter shapes the tree while it is dormant and encourages strong growth.",
        "Bees visit flowers in clusters, so planting several plants of one kind together attracts more pollinators.",
        "Seeds sown too deep may never reach the light; a rule of thumb is twice the depth of the seed's width.",
        "Rotating crops each year prevents pests and diseases from building up in the same patch of soil.",
    ],
    "history": [
        "The printing press spread across Europe within a few decades of Gutenberg's first Bible around 1455.",
        "Roman roads were built in layers of stone and gravel, and some are still used by traffic today.",
        "The Silk Road was never one road but a network of routes linking China with the Mediterranean.",
        "In the nineteenth century, railways changed how people thought about time, leading to standard time zones.",
        "Medieval monasteries copied books by hand, and many classical texts survived only through their work.",
        "The Great Library of Alexandria declined over centuries rather than disappearing in a single fire.",
        "Early maps often placed the most important city at the centre, showing beliefs as much as geography.",
        "The invention of the shipping container in the 1950s made global trade far cheaper and faster.",
        "Ancient Egyptians used a calendar of 365 days divided into twelve months of thirty days plus five extra days.",
        "The telegraph allowed news to cross oceans in minutes once the first lasting transatlantic cable worked in 1866.",
    ],
    "programming": [
        "A function that does one thing is easier to test, to name and to reuse than one that does several.",
        "Version control lets a team experiment freely, because any change can be inspected and undone later.",
        "Premature optimisation wastes effort; measure first, then speed up the part that actually dominates.",
        "Good error messages say what went wrong, where it happened and what the user can do about it.",
        "Automated tests are most valuable when they fail for the right reason and pass for the right reason.",
        "Reading code is harder than writing it, so clear names repay their cost many times over.",
        "A hash table finds items in constant time on average, which is why dictionaries are so widely used.",
        "Concurrency bugs often appear only under load, so they deserve tests that create real contention.",
        "Logging at the right level helps operators, while logging everything hides the one line that matters.",
        "Small commits with clear messages make it easier to find the change that introduced a bug.",
    ],
    "travel": [
        "Trains are often the most relaxing way to cross a country, with more room and better views than planes.",
        "Learning a few phrases in the local language opens doors that a guidebook alone never will.",
        "Packing light means fewer worries, since you can carry everything and move on whenever you like.",
        "Markets are a good place to understand a town, because that is where people buy what they actually eat.",
        "Travel insurance matters most on the trips where you think nothing could possibly go wrong.",
        "Arriving in daylight makes it much easier to find your way from the station to your lodging.",
        "Walking tours reveal small details of a city, such as old signs and courtyards hidden behind gates.",
        "Museums are quieter early on weekday mornings, before school groups and tour buses arrive.",
        "A paper map still works when the phone battery dies and there is no signal in the mountains.",
        "Slow travel, staying longer in fewer places, often costs less and leaves deeper memories.",
    ],
    "health": [
        "Regular walking strengthens the heart and lungs, and it needs no equipment beyond comfortable shoes.",
        "Sleep helps the brain store memories, which is why a rested student often performs better than a tired one.",
        "Drinking water through the day matters more than drinking a large amount all at once.",
        "Stretching after exercise, when muscles are warm, is safer and more effective than stretching cold.",
        "A diet rich in vegetables, beans and whole grains supplies fibre that most people lack.",
        "Washing hands with soap for twenty seconds removes far more germs than a quick rinse.",
        "Short breaks from a screen every hour reduce eye strain and remind the body to move.",
        "Strength training is valuable at every age, because muscle protects joints and bones.",
        "Stress affects the body as well as the mind, and simple breathing exercises can lower the heart rate.",
        "Vaccines train the immune system to recognise a threat before a real infection ever happens.",
    ],
    "finance": [
        "An emergency fund covering a few months of expenses turns a crisis into an inconvenience.",
        "Compound interest rewards patience, since returns earn further returns year after year.",
        "Spreading savings across many investments reduces the damage any single failure can do.",
        "High fees quietly eat into long term savings, so it is worth comparing what funds charge.",
        "A budget is not a punishment but a plan that tells money where to go before it disappears.",
        "Paying off expensive debt first is often the best guaranteed return a household can find.",
        "Inflation means that cash kept under a mattress slowly buys less with every passing year.",
        "Reading the terms of a loan carefully can reveal costs that the advertised rate does not show.",
        "Automatic transfers to a savings account make saving a habit rather than a monthly decision.",
        "Insurance exists for losses you could not afford, not for small costs you can cover yourself.",
    ],
}
OTHER = {
    "de": ["Der Herbst ist die beste Zeit, um im Garten neue Sträucher zu pflanzen.",
           "Viele Menschen fahren mit dem Fahrrad zur Arbeit, weil es gesund und günstig ist.",
           "Die Bibliothek unserer Stadt bietet jeden Samstag Lesungen für Kinder an.",
           "Ein gutes Brot braucht Zeit, Wasser, Mehl und etwas Geduld beim Backen.",
           "Im Sommer wandern wir gerne in den Bergen und übernachten in einfachen Hütten.",
           "Die Ausstellung im Museum zeigt Gemälde aus dem neunzehnten Jahrhundert."],
    "fr": ["Le marché du samedi matin est le meilleur endroit pour acheter des légumes frais.",
           "Nous avons visité un petit village au bord de la mer pendant les vacances d'été.",
           "La lecture avant de dormir aide beaucoup de personnes à se détendre après une longue journée.",
           "Les enfants apprennent plus facilement une langue étrangère lorsqu'ils l'entendent tous les jours.",
           "Il faut arroser les tomates le matin pour éviter que les feuilles restent humides la nuit.",
           "Le musée de la ville présente une nouvelle exposition consacrée à la photographie."],
    "es": ["El tren sale de la estación central cada hora durante todo el día.",
           "Mi abuela prepara la mejor paella del pueblo con arroz, verduras y mariscos.",
           "Los estudiantes leen en la biblioteca porque allí hay silencio y buena luz.",
           "En primavera los campos se llenan de flores amarillas y rojas.",
           "Es importante beber agua y descansar bien antes de una carrera larga.",
           "La ciudad antigua tiene calles estrechas y plazas llenas de vida por la noche."],
    "it": ["La pasta fatta in casa richiede solo farina, uova e un po' di pazienza.",
           "Ogni estate andiamo al mare con tutta la famiglia per una settimana.",
           "Il museo della città espone quadri di pittori del Rinascimento.",
           "Gli studenti preparano l'esame di storia leggendo insieme in biblioteca.",
           "In autunno le colline si colorano di rosso e di giallo.",
           "Il treno per Roma parte dal binario tre alle otto e mezza."],
    "pt": ["A feira de domingo vende frutas frescas e pão feito em casa.",
           "Os alunos leram o livro inteiro durante as férias de verão.",
           "O rio atravessa a cidade e divide os bairros antigos dos novos.",
           "Minha avó sempre dizia que o segredo da sopa é cozinhar devagar.",
           "No inverno as noites são longas e frias nas montanhas.",
           "A biblioteca pública oferece cursos gratuitos de informática para adultos."],
    "nl": ["In het voorjaar fietsen veel mensen langs de bloeiende bollenvelden.",
           "De bibliotheek in ons dorp is op zaterdag de hele dag open.",
           "Mijn buurman kweekt tomaten en komkommers in een kleine kas.",
           "De trein naar Amsterdam vertrekt elk half uur vanaf het station.",
           "Na het eten maken we vaak een wandeling door het park.",
           "Het museum heeft een nieuwe tentoonstelling over de Gouden Eeuw."],
    "zh": ["我们每天早上在公园里散步，呼吸新鲜的空气。", "这家小饭馆的面条很好吃，价格也很便宜。",
           "图书馆里有很多学生在安静地看书。", "春天来了，山上的花都开了。"],
    "ja": ["毎朝、駅まで歩いて電車に乗ります。", "この町の図書館はとても静かで、本がたくさんあります。",
           "週末は家族と一緒に公園へ行きました。", "秋になると、山の木の葉が赤くなります。"],
    "ru": ["Каждое утро я гуляю с собакой в парке рядом с домом.", "В нашей библиотеке можно найти книги на многих языках.",
           "Зимой в деревне очень тихо и много снега.", "Мы поехали на поезде к морю на две недели."],
}
BOILERPLATE = [
    "We use cookies to improve your experience. By continuing to browse you accept our cookie policy.",
    "Click here to subscribe to our newsletter!", "Home | About | Contact | Privacy Policy | Terms of Use",
    "Copyright 2024 All rights reserved.", "Please enable JavaScript to view this page.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.",
]
PII = [
    "For questions write to maria.lopez@example.org or call +1 (415) 555-0132.",
    "Send the invoice to accounts@shop-example.com; the server logs showed 203.0.113.42 and 2001:db8::7334.",
    "The form listed SSN 123-45-6789 and card number 4111 1111 1111 1111 by mistake.",
    "Bank transfer to IBAN DE89 3704 0044 0532 0130 00, reference 2291.",
    "Call our office on +44 20 7946 0958 or mail j.smith@example.net for an appointment.",
    "Paid with Mastercard 5555 5555 5555 4444; receipt sent to pat@example.com.",
]


def english(rng: random.Random) -> tuple[str, str]:
    topic = rng.choice(sorted(EN))
    sents = EN[topic][:]
    rng.shuffle(sents)
    k = rng.randint(6, 10)
    paras, i = [], 0
    while i < k:
        n = rng.randint(2, 4)
        paras.append(" ".join(sents[i:i + n]))
        i += n
    return topic, "\n\n".join(paras)


def main() -> None:
    rng = random.Random(2026)
    docs: list[dict] = []

    def add(text: str, kind: str, lang: str = "en", with_id: bool = True) -> dict:
        d = {"id": f"web-{len(docs):06d}", "text": text, "url": f"https://example.com/{kind}/{len(docs)}", "source": kind}
        if not with_id:
            del d["id"]
        docs.append(d)
        return d

    for _ in range(170):
        topic, text = english(rng)
        if rng.random() < 0.15:
            text += "\n\n" + rng.choice(BOILERPLATE)
        add(text, topic, with_id=rng.random() > 0.1)
    for lang, sents in sorted(OTHER.items()):
        for _ in range(6 if lang in ("zh", "ja", "ru") else 10):
            s = sents[:]
            rng.shuffle(s)
            add(" ".join(s[: rng.randint(3, len(s))]), f"lang-{lang}", lang)
    for _ in range(25):  # PII inside good text
        _, text = english(rng)
        paras = text.split("\n\n")
        paras.insert(rng.randrange(len(paras) + 1), rng.choice(PII))
        add("\n\n".join(paras), "pii")
    for i in range(12):  # boilerplate-only pages
        add("\n".join(rng.sample(BOILERPLATE, rng.randint(2, 4))), "boilerplate")
    junk = ["$$$ ### !!! @@@ %%% ^^^ &&& *** ((( )))", "buy now", "ok", "click",
            "buy now buy now buy now buy now buy now buy now buy now buy now buy now buy now",
            "1234 5678 9012 3456 7890 1234 5678 9012 3456 7890 1234 5678",
            "cheap watches cheap watches best cheap watches online cheap watches free shipping cheap watches",
            "x" * 300, "<div><span>Loading...</span></div><script>var a = 1;</script>",
            "The cafÃ© donâ€™t close early on Sundays, and the owner\x07 says the espresso is the best in town. " * 3,
            "   lots      of      spaces      and\t\t\ttabs   between   words   in   this   line   of   text   " * 4]
    for j in junk:
        add(j, "junk")
    originals = [d for d in docs if d["source"] in EN]
    for d in rng.sample(originals, 22):  # exact duplicates, some several times
        for _ in range(rng.choice([1, 1, 2])):
            add(d["text"], d["source"] + "-copy")
    for d in rng.sample(originals, 22):  # near duplicates
        words = d["text"].split(" ")
        for _ in range(rng.randint(1, 3)):
            words[rng.randrange(len(words))] = rng.choice(["very", "quite", "really", "often"])
        add(" ".join(words), d["source"] + "-near")

    rng.shuffle(docs)
    OUT.mkdir(exist_ok=True)
    thirds = [docs[i::3] for i in range(3)]
    lines = [[json.dumps(d, ensure_ascii=False).encode() for d in part] for part in thirds]
    (OUT / "web-00.jsonl").write_bytes(b"\n".join(lines[0]) + b"\n")
    bad = [b'{"id": "bad-1", "text": "unterminated', b'{"id": "bad-2", "text": null}', b'{"id": "bad-3", "text": 42}',
           b'{"id": "bad-4", "text": ""}', b'{"id": "bad-5", "text": "caf\xe9 in latin-1"}']
    (OUT / "web-01.jsonl").write_bytes(b"\n".join(lines[1][:20] + bad + lines[1][20:]) + b"\n")
    with open(OUT / "web-02.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(b"\n".join(lines[2]) + b"\n")
    print(f"wrote {len(docs)} documents and {len(bad)} bad lines to {OUT}")


if __name__ == "__main__":
    main()
