"""Generate the bundled example corpus (examples/corpus/): a small web-like crawl written for thresher.

All text is hand-written in the pools below and composed into documents by a seeded generator (standard
library only). The corpus plants what a curation pipeline must handle: several languages, exact and near
duplicates, PII, boilerplate, junk and unreadable lines. Rerunning gives byte-identical files (stable order,
gzip mtime 0), and rewrites examples/corpus/README.md with the counts of everything planted.

    python examples/make_corpus.py
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "corpus"
SEED = 20260
MAX_SENTENCE_OVERLAP = 0.5  # Jaccard of sentence sets between two composed documents (keeps them distinct)

# --------------------------------------------------------------------------------------------------- English
EN = {
    "cooking": (
        "www.kitchen-notebook.example",
        [
            "How to Build Flavour in Everyday Cooking",
            "Kitchen Basics Every Home Cook Should Know",
            "Notes from a Small Kitchen",
            "Simple Techniques for Better Weeknight Dinners",
        ],
        [
            "A good stock is the quiet foundation of many soups, sauces and braises, and it costs very little to make at home.",
            "Start with a pot of cold water, a few roasted bones or vegetable scraps, an onion cut in half and a bay leaf.",
            "Bring it slowly to a simmer and skim the foam that rises during the first half hour, because that keeps the broth clear.",
            "Salt should be added near the end, since the liquid reduces and a well seasoned stock can quickly become too salty.",
            "When you sear meat, make sure the pan is properly hot and the surface of the meat is dry, or it will steam instead of browning.",
            "Crowding the pan lowers the temperature, so it is better to cook in two batches than to squeeze everything in at once.",
            "The brown bits left on the bottom of the pan carry a lot of flavour, and a splash of wine or water will lift them into a sauce.",
            "Fresh herbs with soft leaves, such as basil, parsley and coriander, are best added at the very end of cooking.",
            "Woody herbs like rosemary and thyme can go in early, because their flavour needs time and heat to come out.",
            "Many home cooks underestimate how much acid improves a dish, and a squeeze of lemon often fixes a sauce that tastes flat.",
            "Dried beans are cheaper than canned ones and, once soaked overnight, they cook in about an hour with a little patience.",
            "A sharp knife is safer than a dull one, because it cuts where you aim it rather than slipping off the skin of a tomato.",
            "Rice turns out better when it is rinsed until the water runs mostly clear, which washes away the loose starch.",
            "Resting meat for a few minutes after cooking lets the juices settle, so they stay in the slice instead of running onto the board.",
            "Leftover roasted vegetables make an excellent base for a frittata, a grain salad or a quick soup the next day.",
            "Tasting as you go is the most useful habit in the kitchen, far more reliable than following a recipe to the gram.",
            "If a dish is too spicy, a spoonful of yogurt, a little sugar or more of the starchy base will soften the heat.",
            "Keeping a small notebook of what worked and what did not turns occasional successes into dishes you can repeat.",
        ],
    ),
    "astronomy": (
        "skywatch-journal.example",
        [
            "A Beginner's Guide to the Night Sky",
            "What You Can See Without a Telescope",
            "Stargazing Tips for Clear Nights",
            "Understanding the Solar System",
        ],
        [
            "On a clear night away from city lights, the naked eye can pick out a few thousand stars and the faint band of the Milky Way.",
            "The Milky Way is our own galaxy seen edge on, a flattened disk of gas, dust and hundreds of billions of stars.",
            "Light from the nearest star beyond the Sun takes a little over four years to reach us, so we always see it as it was in the past.",
            "Planets do not twinkle as much as stars, because they appear as tiny disks rather than single points of light.",
            "Jupiter is usually the easiest planet to find with binoculars, and its four largest moons look like a line of small dots beside it.",
            "The rings of Saturn are made of countless pieces of ice and rock, ranging from grains of dust to chunks as large as a house.",
            "The phases of the Moon come from the changing angle between the Sun, the Earth and the Moon over roughly a month.",
            "A total solar eclipse happens when the Moon passes directly in front of the Sun and briefly turns day into a strange twilight.",
            "Meteor showers occur when the Earth passes through a trail of debris left behind by a comet, and the best views come after midnight.",
            "Most meteors are no bigger than a grain of sand, yet they burn brightly because they hit the atmosphere at enormous speed.",
            "Astronomers measure distances within the solar system in astronomical units, the average distance between the Earth and the Sun.",
            "For objects outside the solar system, the light year is more practical, since even the closest stars are unimaginably far away.",
            "A small telescope with a good mount is often more useful than a large one that is too heavy to carry outside.",
            "Your eyes need about twenty minutes in the dark to adapt fully, and a single glance at a bright phone screen undoes much of that.",
            "Red light preserves night vision, which is why many observers cover their torches with red film or tape.",
            "Star charts and planetarium apps help beginners learn the constellations one season at a time.",
            "Keeping an observing log, with the date, the sky conditions and what you saw, makes it easier to notice changes over months.",
            "Local astronomy clubs often hold public viewing nights, and members are usually happy to let newcomers look through their telescopes.",
        ],
    ),
    "gardening": (
        "greenthumb-notes.example",
        [
            "Getting Started with a Vegetable Garden",
            "Healthy Soil, Healthy Plants",
            "A Practical Guide to Watering and Mulching",
            "Small Space Gardening",
        ],
        [
            "Healthy soil is the most important thing in a garden, and it improves year after year when you add compost and avoid compacting it.",
            "Before planting, it helps to watch how sunlight moves across the garden during the day and note which corners stay in shade.",
            "Tomatoes, peppers and most herbs need at least six hours of direct sun to produce a good harvest.",
            "Leafy greens such as lettuce and spinach tolerate partial shade and often do better when summer afternoons get very hot.",
            "Watering deeply once or twice a week encourages roots to grow down, while a light sprinkle every day keeps them near the surface.",
            "The best time to water is early in the morning, when less is lost to evaporation and the leaves dry before evening.",
            "A layer of mulch keeps the soil cool, holds moisture and smothers many weeds before they get started.",
            "Crop rotation means not growing the same family of plants in the same bed every year, which helps to limit pests and diseases.",
            "Companion planting, such as growing marigolds near vegetables, is a traditional practice that many gardeners still swear by.",
            "Slugs and snails do most of their damage at night, so a walk with a torch after dark shows where the trouble really comes from.",
            "Encouraging birds, frogs and ground beetles into the garden is a gentle way to keep pest numbers under control.",
            "Seeds sown indoors need plenty of light, otherwise the seedlings grow tall and weak as they stretch toward the window.",
            "Young plants raised inside should be hardened off by setting them outdoors for a few hours a day over about a week.",
            "Pruning fruit trees in late winter, while they are dormant, makes it easier to see the shape of the branches.",
            "A compost heap works best with a mix of green material, like grass clippings, and brown material, like dry leaves and cardboard.",
            "Turning the heap every few weeks adds air and speeds up the work of the microbes that break everything down.",
            "Keeping notes on planting dates and varieties makes the following season much easier to plan.",
            "Even a small balcony can produce herbs, salad leaves and a few strawberries if the containers are large enough and watered regularly.",
        ],
    ),
    "history": (
        "past-and-present.example",
        [
            "How the Printing Press Changed Europe",
            "Water, Roads and Empire",
            "Reading the Past: A Short Introduction",
            "Trade Routes That Shaped the World",
        ],
        [
            "The printing press, developed in Europe in the fifteenth century, changed how quickly ideas could travel from one city to another.",
            "Before printing, books were copied by hand, which made them expensive and limited reading to a small part of society.",
            "Within a few decades, printed pamphlets, calendars and religious texts were circulating in large numbers across the continent.",
            "Historians often point out that cheaper books helped spread literacy, although the change took place over several generations.",
            "The ancient city of Rome depended on aqueducts that carried fresh water over long distances using only a gentle slope.",
            "Some of these structures remained in use for centuries, and a few still carry water today after careful restoration.",
            "Trade routes such as the Silk Road connected distant regions and moved not only goods but also languages, religions and technologies.",
            "Merchants rarely travelled the whole route themselves; instead, goods passed through many hands from one market town to the next.",
            "The Industrial Revolution began in Britain in the late eighteenth century, driven by coal, steam power and new textile machines.",
            "Factory work brought long hours and crowded cities, and it took decades of reform before working conditions began to improve.",
            "Railways shrank travel times dramatically and even led to the adoption of standard time zones.",
            "Local archives, parish registers and old newspapers are valuable sources for anyone researching the history of a town or family.",
            "Primary sources need careful reading, because every author wrote with a particular audience and purpose in mind.",
            "Museums increasingly work with the communities whose objects they hold, asking how those collections should be displayed.",
            "Oral history projects record the memories of ordinary people, preserving details that rarely appear in official documents.",
            "Maps from earlier centuries reveal not only geography but also what their makers believed about the world.",
            "Studying the past does not give simple lessons, but it does show how complex and uncertain important decisions looked at the time.",
            "Visiting a historic site in person often makes the scale of past events easier to grasp than reading about them.",
        ],
    ),
    "programming": (
        "dev-field-notes.example",
        [
            "Habits That Make Code Easier to Maintain",
            "Testing, Reviews and Other Team Habits",
            "What I Wish I Knew as a Junior Developer",
            "Writing Software for Humans",
        ],
        [
            "Readable code matters because most software is read many more times than it is written.",
            "Choosing clear names for variables and functions is one of the cheapest ways to make a program easier to understand.",
            "A function that does one thing is easier to test, easier to reuse and easier to replace when requirements change.",
            "Automated tests give you the confidence to change code without worrying that something far away has quietly broken.",
            "It is usually worth writing a failing test that reproduces a bug before trying to fix it.",
            "Version control lets a team work on the same project at once and makes it possible to see why each change was made.",
            "Small commits with descriptive messages are far easier to review than one enormous change at the end of the week.",
            "Code review is not only about catching mistakes; it also spreads knowledge about the system across the team.",
            "Premature optimisation wastes time, so measure where the program actually spends its time before rewriting anything.",
            "A profiler often reveals that a single slow query or an unnecessary loop is responsible for most of the delay.",
            "Logging should explain what the program was doing when something went wrong, without flooding the output with noise.",
            "Error messages are part of the user interface, and a good one tells the reader what happened and what to do next.",
            "Dependencies save effort, but each one is also code you must trust, update and occasionally replace.",
            "Documentation is most useful when it explains why the code works the way it does, not just what each line does.",
            "Many beginners learn fastest by building a small project they actually care about, such as a budget tracker or a game.",
            "Reading other people's code, especially in well maintained open source projects, teaches patterns that tutorials often skip.",
            "Taking a short break when stuck on a problem is surprisingly effective, because the answer often appears once you stop staring at the screen.",
            "Pair programming can feel slow at first, but it tends to produce simpler designs and fewer defects.",
        ],
    ),
    "travel": (
        "slow-road-travels.example",
        [
            "The Case for Slow Travel",
            "Packing Light and Other Travel Lessons",
            "How to Explore a New City Like a Local",
            "Notes from the Road",
        ],
        [
            "Travelling slowly, with fewer destinations and more time in each, often leads to richer experiences than racing between famous sights.",
            "Trains are a comfortable way to cross a country, and the view from the window becomes part of the journey rather than a delay.",
            "Booking accommodation near a public transport stop saves both time and money on longer stays.",
            "Packing light makes everything easier, from climbing station stairs to walking along narrow old streets.",
            "A small daypack, a reusable water bottle and comfortable shoes are worth more than a suitcase full of outfits.",
            "Learning a few words of the local language, such as hello, please and thank you, is always appreciated.",
            "Markets are a wonderful place to understand a region, because they show what people actually eat and how they shop.",
            "Eating where local families eat is usually cheaper and more interesting than choosing restaurants on the main square.",
            "Early mornings are the best time to visit popular landmarks, before the tour groups arrive and the heat builds up.",
            "Travel insurance is easy to forget, yet it can save a great deal of money and stress if plans go wrong.",
            "Keeping digital copies of important documents in a secure place helps if a passport or wallet goes missing.",
            "Walking tours led by local guides often reveal stories and hidden corners that are not in any guidebook.",
            "Respecting local customs, such as dressing modestly at religious sites, is part of being a considerate visitor.",
            "Off-season travel brings lower prices and quieter streets, although some attractions may keep shorter hours.",
            "A rainy day can be the perfect excuse to visit a small museum, a library or a cafe you would otherwise have walked past.",
            "Writing a few lines in a journal each evening preserves details that photographs alone do not capture.",
            "Many travellers find that the most memorable moments are unplanned, like a conversation with a shopkeeper or a wrong turn that leads to a view.",
            "Coming home with a fresh way of seeing your own city is one of the quiet rewards of time spent abroad.",
        ],
    ),
    "health": (
        "everyday-wellbeing.example",
        [
            "Small Habits for a Healthier Week",
            "Sleep, Movement and Food: The Basics",
            "Why Consistency Beats Intensity",
            "Looking After Body and Mind",
        ],
        [
            "Regular physical activity does not have to mean a gym membership, since brisk walking counts as well.",
            "Health guidelines commonly suggest around two and a half hours of moderate activity spread across the week.",
            "Strength exercises twice a week help to maintain muscle and bone density, especially as people get older.",
            "Sleep is often the first thing people sacrifice when they are busy, even though it affects mood, memory and immunity.",
            "Keeping a regular bedtime and avoiding bright screens late in the evening can make it easier to fall asleep.",
            "A balanced diet includes plenty of vegetables, fruit, whole grains and sources of protein such as beans, fish or eggs.",
            "Drinking enough water matters, but the amount each person needs depends on climate, activity and body size.",
            "Highly processed snacks are convenient, yet they tend to be high in salt, sugar and fat while keeping you full for only a short time.",
            "Stress is a normal part of life, but long periods of it can affect sleep, digestion and concentration.",
            "Simple habits such as short walks, time outdoors and talking with friends are effective ways to manage everyday stress.",
            "Washing hands with soap for at least twenty seconds remains one of the best ways to prevent the spread of common infections.",
            "Regular check-ups can catch problems early, when they are usually easier to treat.",
            "Anyone starting a new exercise programme after a long break should increase the intensity gradually.",
            "Pain that is sharp, persistent or unusual is a signal to stop and seek advice rather than push through.",
            "Mental health deserves the same attention as physical health, and asking for help is a sign of strength rather than weakness.",
            "Small changes that you can keep up for months are more valuable than dramatic plans that last only a week.",
            "This article is for general information only and is not a substitute for advice from a qualified health professional.",
            "Building healthy routines with family or friends makes them more enjoyable and easier to maintain.",
        ],
    ),
    "finance": (
        "plain-money-guide.example",
        [
            "Budgeting Without the Guilt",
            "A Simple Plan for Saving and Investing",
            "Common Money Mistakes and How to Avoid Them",
            "Personal Finance in Plain Language",
        ],
        [
            "A simple budget starts with writing down what comes in each month and where it actually goes.",
            "Many people are surprised by how much they spend on small purchases that do not feel important at the time.",
            "An emergency fund covering several months of essential expenses provides a cushion when the unexpected happens.",
            "Paying off high interest debt, such as credit card balances, is often the best return you can get on spare money.",
            "Compound interest works in both directions, growing savings over time but also making unpaid debts larger.",
            "Investing regularly in a broad, low cost index fund is a common strategy for people saving over many years.",
            "Trying to time the market usually leads to buying high and selling low, because emotions get in the way.",
            "Fees that look small, such as one or two percent a year, can consume a large share of long term returns.",
            "Diversification means spreading money across different kinds of assets so that one bad investment does not sink the whole portfolio.",
            "It is wise to be sceptical of any offer that promises high returns with no risk, since such promises are a classic sign of fraud.",
            "Reading the terms of a loan carefully, including the total cost over its lifetime, helps avoid unpleasant surprises.",
            "Automating savings, so that money moves to a separate account on payday, removes the temptation to spend it first.",
            "Reviewing subscriptions once a year often reveals services that nobody in the household uses any more.",
            "Retirement may feel far away, yet starting early gives your savings many more years to grow.",
            "Talking openly about money with a partner or family members can prevent misunderstandings and shared stress.",
            "Financial advice should fit your own situation, so general articles are a starting point rather than a plan.",
            "Keeping receipts and important documents organised makes tax season much less stressful.",
            "The goal of budgeting is not to feel deprived but to spend money deliberately on the things you value most.",
        ],
    ),
    "photography": (
        "light-and-lens.example",
        [
            "Better Photos with the Camera You Already Own",
            "Understanding Light in Photography",
            "Composition Tips for Beginners",
            "Learning to See Like a Photographer",
        ],
        [
            "The best camera is often the one you have with you, and modern phones can take remarkable pictures in good light.",
            "Light matters more than equipment, and the soft light shortly after sunrise or before sunset flatters almost any subject.",
            "Harsh midday sun creates deep shadows, so photographers often look for open shade or wait for a cloud to pass.",
            "The rule of thirds suggests placing the main subject away from the centre of the frame to create a more dynamic image.",
            "Rules of composition are useful guides, but breaking them on purpose can produce striking photographs.",
            "Getting closer to your subject usually improves a picture more than zooming in from far away.",
            "A steady hand, or better still a tripod, is essential for sharp images in low light.",
            "Shooting a scene from a lower or higher angle than eye level can make a familiar place look new.",
            "Learning how aperture, shutter speed and sensitivity work together gives you far more control than automatic modes.",
            "A wide aperture blurs the background and helps a portrait subject stand out.",
            "Fast shutter speeds freeze motion, while slow ones turn moving water into a smooth, silky surface.",
            "Editing should enhance a photograph rather than disguise it, and subtle adjustments usually age better than heavy filters.",
            "Backing up photos in more than one place protects years of memories from a single failed drive.",
            "Street photography requires patience and respect, especially when photographing people who have not posed.",
            "Reviewing your own images critically, and choosing only the best few, is one of the fastest ways to improve.",
            "Joining a local photo walk is a friendly way to learn new techniques and see how others approach the same scene.",
            "Printing a favourite picture and hanging it on the wall gives it a presence that a screen rarely matches.",
            "Many great photographs come from returning to the same place again and again in different seasons and weather.",
        ],
    ),
    "birdwatching": (
        "field-and-feather.example",
        [
            "Birdwatching for Beginners",
            "Making Your Garden Bird Friendly",
            "What to Look for on a Morning Bird Walk",
            "The Quiet Joy of Watching Birds",
        ],
        [
            "Birdwatching is an easy hobby to start, since all you really need is curiosity and a little patience.",
            "A pair of binoculars with moderate magnification is easier to hold steady than a very powerful pair.",
            "Early morning is usually the busiest time for birds, when they feed and sing after the cold night.",
            "Learning common songs and calls helps enormously, because many birds are heard long before they are seen.",
            "A field guide or identification app makes it easier to compare shape, size, colour and behaviour.",
            "Noticing how a bird moves, whether it hops, walks or flicks its tail, can be as useful as noting its colours.",
            "Garden feeders attract finches, tits and sparrows, but they should be cleaned regularly to prevent disease.",
            "Planting native shrubs that produce berries offers food and shelter through the autumn and winter.",
            "Wetlands and estuaries are excellent places to watch waders and ducks, especially during migration.",
            "Migration is one of the great spectacles of nature, with some small songbirds crossing seas and deserts twice a year.",
            "Keeping a respectful distance from nests is essential, because disturbance can cause parents to abandon their eggs.",
            "Many birders keep a list of every species they have seen, which adds a gentle element of collecting to each outing.",
            "Citizen science projects invite volunteers to count birds in their gardens, providing valuable data on population changes.",
            "Bad weather can bring unusual visitors, as storms sometimes push seabirds far inland.",
            "Wearing muted clothing and moving slowly makes it easier to get close without frightening the birds away.",
            "A notebook for sketches and descriptions sharpens observation skills more than photographs alone.",
            "Local nature reserves often have hides, which are simple shelters that let you watch birds without being seen.",
            "Over time, regular walks along the same route reveal the seasonal rhythm of arrivals, departures and nesting.",
        ],
    ),
    "home_repair": (
        "fix-it-yourself.example",
        [
            "Small Repairs You Can Do Yourself",
            "A Weekend of Household Fixes",
            "Basic Tools and Safe Habits for Home Repair",
            "Keeping an Old House in Good Shape",
        ],
        [
            "Many small repairs around the house are manageable with a few basic tools and some careful reading.",
            "A dripping tap is usually caused by a worn washer or cartridge, which is inexpensive to replace.",
            "Always turn off the water supply before taking a tap apart, and keep a towel ready for the water left in the pipes.",
            "Squeaky floorboards can often be silenced by driving a screw through the board into the joist below.",
            "Before drilling into a wall, check for hidden pipes and cables with a detector or by studying where outlets and switches are placed.",
            "Filling small holes in plaster is easier with a flexible filler and a wide scraper than with a narrow knife.",
            "Sanding the repair lightly once it is dry gives a smooth surface that disappears under a fresh coat of paint.",
            "Doors that stick in damp weather may need their hinges tightened before any wood is planed away.",
            "Sealing gaps around windows and doors reduces draughts and can make a noticeable difference to heating bills.",
            "Gutters should be cleared of leaves at least once a year so that rainwater does not overflow and damage the walls.",
            "Electrical work beyond changing a bulb or a plug is best left to a qualified electrician in most places.",
            "Good lighting and a stable ladder make almost every repair job safer and faster.",
            "Keeping spare screws, washers and fuses sorted in labelled boxes saves time when something breaks.",
            "Reading the instructions from the manufacturer before starting avoids many mistakes, even if it feels slow.",
            "Taking photos of each step while dismantling something makes it much easier to put back together.",
            "Mould in bathrooms is usually a sign of poor ventilation, so an extractor fan or an open window helps more than cleaning alone.",
            "Knowing when to call a professional is a skill in itself, especially for gas, structural problems or major leaks.",
            "Finishing one small job completely is more satisfying than starting several and leaving them half done.",
        ],
    ),
    "music": (
        "practice-room-blog.example",
        [
            "Learning an Instrument as an Adult",
            "How to Practise Without Burning Out",
            "Why Playing with Others Makes You Better",
            "Notes on Musical Progress",
        ],
        [
            "Learning a musical instrument as an adult is entirely possible, although progress depends on regular practice rather than talent.",
            "Short daily practice sessions of twenty or thirty minutes are more effective than one long session at the weekend.",
            "Playing slowly and accurately builds the muscle memory that later allows you to play quickly.",
            "A metronome can feel restrictive at first, but it reveals the places where the rhythm rushes or drags.",
            "Recording yourself is a humbling but useful way to hear what listeners actually hear.",
            "Learning to read music opens up a vast repertoire, while playing by ear trains listening and improvisation.",
            "Scales and arpeggios are not very exciting, yet they make difficult passages in real pieces much easier.",
            "Playing with other people, whether in a band, a choir or an informal group, teaches timing and listening in a way solo practice cannot.",
            "A good teacher notices habits that will cause trouble later, such as tension in the shoulders or an awkward hand position.",
            "The guitar and the piano are popular first instruments because they allow you to play melody and harmony together.",
            "Wind instruments depend heavily on breath control, which improves steadily with simple daily exercises.",
            "Tuning the instrument before each session trains the ear and makes practice more pleasant.",
            "Listening widely, across different genres and eras, gives musicians more ideas to draw on.",
            "Performing for friends, even informally, helps to manage nerves before larger concerts.",
            "Taking care of an instrument, by keeping it clean and away from extreme temperatures, extends its life considerably.",
            "Many community music schools offer affordable group lessons for beginners of every age.",
            "Setting small goals, such as learning one new piece each month, keeps motivation high.",
            "In the end, the joy of making music comes from the process as much as from any final performance.",
        ],
    ),
}
MIXED_TOPICS = [
    ("gardening", "cooking"),
    ("travel", "photography"),
    ("history", "travel"),
    ("health", "cooking"),
    ("birdwatching", "photography"),
    ("astronomy", "photography"),
    ("finance", "home_repair"),
    ("music", "history"),
    ("birdwatching", "gardening"),
    ("programming", "finance"),
]

# ------------------------------------------------------------------------------------------- other languages
OTHER = {
    "de": (
        "ratgeber-alltag.example",
        [
            "Der Herbst ist die beste Zeit, um im Garten neue Sträucher und Obstbäume zu pflanzen.",
            "Der Boden ist dann noch warm, und die Wurzeln können sich vor dem Winter gut entwickeln.",
            "Viele Städte in Deutschland bieten inzwischen kostenlose Führungen durch ihre historischen Altstädte an.",
            "Wer mit der Bahn reist, sollte die Fahrkarte möglichst früh buchen, weil die Sparpreise schnell vergriffen sind.",
            "Ein gutes Brot braucht vor allem Zeit, denn der Teig entwickelt sein Aroma erst bei einer langen, kühlen Gare.",
            "Am Wochenende treffen sich viele Familien auf dem Wochenmarkt, um frisches Gemüse aus der Region zu kaufen.",
            "Regelmäßige Bewegung an der frischen Luft stärkt das Immunsystem und verbessert die Stimmung.",
            "Die Bibliothek unserer Stadt hat ihre Öffnungszeiten verlängert und bietet jetzt auch Kurse für Senioren an.",
            "Beim Wandern in den Alpen sollte man das Wetter genau beobachten, da Gewitter oft sehr plötzlich aufziehen.",
            "Eine Thermoskanne mit heißem Tee und ein paar belegte Brote gehören in jeden Rucksack.",
            "Im Verein lernen Kinder nicht nur Fußball, sondern auch Teamgeist und Verantwortung.",
            "Wer Energie sparen möchte, kann schon mit kleinen Änderungen im Alltag viel erreichen.",
            "Die Heizung etwas niedriger einzustellen und die Fenster kurz, aber kräftig zu lüften, spart spürbar Kosten.",
            "Das Museum zeigt in diesem Sommer eine Ausstellung über die Geschichte der Buchdruckerei.",
            "Nach dem Abendessen sitzen wir oft noch lange zusammen und erzählen von unseren Erlebnissen.",
            "Es lohnt sich, beim Einkaufen auf saisonale Produkte zu achten, weil sie frischer und meistens günstiger sind.",
        ],
    ),
    "fr": (
        "carnet-du-village.example",
        [
            "Le marché du samedi matin est le cœur de la vie du village, avec ses fromages, ses fruits et ses fleurs.",
            "Les habitants viennent autant pour discuter avec leurs voisins que pour faire leurs courses.",
            "Pour réussir une bonne soupe de légumes, il faut prendre le temps de faire revenir les oignons doucement.",
            "La lecture avant de dormir aide beaucoup de personnes à se détendre après une journée chargée.",
            "Nous avons visité un petit musée consacré à l'histoire de la région et à ses anciens métiers.",
            "Le guide nous a expliqué comment les paysans vivaient au siècle dernier, sans électricité ni eau courante.",
            "Au printemps, il est conseillé de semer les radis et les salades dès que la terre se réchauffe.",
            "Une promenade quotidienne d'une demi-heure suffit déjà à améliorer la santé et le moral.",
            "Les trains régionaux permettent de découvrir la campagne sans voiture et à un prix raisonnable.",
            "Il vaut mieux réserver les billets à l'avance pendant les vacances scolaires, car les places partent vite.",
            "Les enfants de l'école ont planté des arbres fruitiers dans la cour avec l'aide de leurs parents.",
            "Chaque année, le festival de musique attire des artistes venus de toute l'Europe.",
            "Il est important de lire attentivement un contrat avant de le signer, surtout lorsqu'il s'agit d'un prêt.",
            "La bibliothèque municipale propose des ateliers d'écriture gratuits pour les adolescents.",
            "Après le repas, nous avons marché jusqu'au bord de la rivière pour regarder le coucher du soleil.",
            "Cette recette de tarte aux pommes vient de ma grand-mère, qui la préparait tous les dimanches.",
        ],
    ),
    "es": (
        "cuaderno-de-viaje.example",
        [
            "El mercado central abre muy temprano y a las siete de la mañana ya está lleno de gente.",
            "Los vendedores conocen a sus clientes por su nombre y siempre tienen una recomendación para el día.",
            "Para preparar una buena paella es fundamental usar un arroz de grano redondo y un caldo casero.",
            "Caminar al menos treinta minutos al día ayuda a mantener el corazón sano y reduce el estrés.",
            "Durante el verano, muchas familias pasan las vacaciones en pueblos pequeños de la costa.",
            "La biblioteca del barrio organiza clubes de lectura para adultos todos los jueves por la tarde.",
            "Antes de viajar, conviene revisar la fecha de caducidad del pasaporte y hacer una copia de los documentos.",
            "En nuestro huerto cultivamos tomates, pimientos y calabacines, que riegan los niños cada tarde.",
            "El museo de la ciudad ha inaugurado una exposición sobre la historia de la navegación.",
            "Ahorrar una pequeña cantidad cada mes es más fácil si se transfiere automáticamente a otra cuenta.",
            "Las fiestas del pueblo se celebran a finales de agosto con música, bailes y comidas al aire libre.",
            "Aprender un idioma nuevo requiere paciencia, pero escuchar canciones y ver películas ayuda mucho.",
            "Los médicos recomiendan dormir entre siete y ocho horas para que el cuerpo se recupere.",
            "Desde lo alto de la colina se puede ver todo el valle y, en los días claros, incluso el mar.",
            "Mi abuela siempre decía que la mejor comida es la que se comparte con la familia.",
            "El tren de alta velocidad ha reducido mucho el tiempo de viaje entre las grandes ciudades del país.",
        ],
    ),
    "it": (
        "diario-di-casa.example",
        [
            "La cucina italiana si basa su pochi ingredienti di ottima qualità, scelti secondo la stagione.",
            "Per un buon sugo di pomodoro bastano olio d'oliva, aglio, basilico fresco e un po' di pazienza.",
            "Ogni domenica la piazza del paese si riempie di famiglie che passeggiano dopo la messa.",
            "Il museo civico conserva una bella collezione di dipinti e di oggetti della vita contadina.",
            "Viaggiare in treno permette di ammirare il paesaggio delle colline e dei vigneti senza fretta.",
            "In primavera è il momento giusto per seminare i fagioli e piantare le prime piantine di pomodoro.",
            "Fare una passeggiata dopo cena è un'abitudine semplice che aiuta la digestione e il sonno.",
            "La biblioteca comunale organizza letture per bambini ogni sabato mattina.",
            "Molti giovani scelgono di studiare all'estero per imparare una nuova lingua e conoscere altre culture.",
            "Il festival estivo propone concerti all'aperto, spettacoli teatrali e mercatini di artigianato.",
            "È importante risparmiare un po' ogni mese per affrontare le spese impreviste con più serenità.",
            "Dalla terrazza si vede il mare, e al tramonto il cielo diventa di un colore arancione intenso.",
        ],
    ),
    "pt": (
        "cronicas-da-cidade.example",
        [
            "A feira da cidade acontece todos os sábados e reúne produtores de frutas, legumes e queijos da região.",
            "Muitas pessoas aproveitam a manhã para caminhar à beira-mar antes de o calor começar.",
            "Para fazer um bom feijão, é importante deixar os grãos de molho durante a noite.",
            "A biblioteca municipal oferece cursos gratuitos de informática para adultos e idosos.",
            "Viajar de comboio pelo interior do país permite conhecer aldeias pequenas e paisagens muito bonitas.",
            "No nosso quintal plantamos alface, couve e ervas aromáticas que usamos todos os dias na cozinha.",
            "Dormir bem é essencial para a saúde, e os especialistas recomendam horários regulares.",
            "O museu apresenta uma exposição sobre a história dos descobrimentos e das grandes viagens marítimas.",
            "As festas populares de junho enchem as ruas de música, dança e cheiro de sardinha assada.",
            "Poupar uma parte do salário todos os meses ajuda a enfrentar despesas inesperadas.",
            "A minha avó ensinou-me a fazer pão caseiro quando eu ainda era criança.",
            "Ao fim da tarde, a luz dourada sobre o rio torna a cidade ainda mais bonita.",
        ],
    ),
    "nl": (
        "dagelijks-leven.example",
        [
            "In het voorjaar fietsen veel mensen langs de bloeiende bollenvelden in het westen van het land.",
            "De fiets is in Nederland het belangrijkste vervoermiddel voor korte afstanden.",
            "Op de zaterdagmarkt kun je verse vis, kaas en groenten van boeren uit de buurt kopen.",
            "Een goede soep begint met een zelfgemaakte bouillon en veel geduld.",
            "De bibliotheek organiseert elke week een taalcafé voor mensen die Nederlands willen oefenen.",
            "Het museum heeft een nieuwe tentoonstelling over de geschiedenis van de scheepvaart.",
            "Wie regelmatig wandelt of fietst, voelt zich vaak fitter en slaapt beter.",
            "In onze moestuin groeien dit jaar bonen, courgettes en een heleboel aardbeien.",
            "Het is verstandig om elke maand een vast bedrag opzij te zetten voor onverwachte uitgaven.",
            "Met de trein ben je binnen een uur van Amsterdam in Utrecht of Den Haag.",
            "Na het eten maakten we nog een wandeling langs de gracht terwijl de zon onderging.",
            "Kinderen leren op school al vroeg hoe ze veilig moeten fietsen in het verkeer.",
        ],
    ),
    "ru": (
        "zametki-o-zhizni.example",
        [
            "Осенью в парке особенно красиво: деревья становятся жёлтыми и красными.",
            "Каждое воскресенье мы ходим на рынок за свежими овощами и фруктами.",
            "Моя бабушка печёт пироги с капустой и яблоками по старому семейному рецепту.",
            "Регулярные прогулки на свежем воздухе помогают лучше спать и меньше уставать.",
            "В городской библиотеке открылся клуб любителей чтения для школьников.",
            "Путешествие на поезде через всю страну занимает почти неделю, но впечатлений хватает на годы.",
            "Весной мы сажаем на даче картофель, морковь и зелень.",
            "В музее сейчас проходит выставка, посвящённая истории города и его жителей.",
            "Чтобы накопить деньги на отпуск, мы каждый месяц откладываем небольшую сумму.",
            "Вечером вся семья собирается за столом, пьёт чай и обсуждает прошедший день.",
        ],
    ),
    "zh": (
        "shenghuo-suibi.example",
        [
            "每到周末，我们全家都会去附近的公园散步。",
            "春天来了，公园里的花都开了，到处都是游客。",
            "学习一门外语需要耐心，每天坚持练习才能进步。",
            "我奶奶做的饺子特别好吃，每年春节我们都一起包饺子。",
            "经常运动和保持良好的睡眠习惯对身体健康非常重要。",
            "这座城市的博物馆收藏了很多珍贵的历史文物。",
            "坐高铁旅行既方便又快捷，几个小时就能到达另一座城市。",
            "图书馆每周六都会为孩子们举办读书活动。",
            "我们在阳台上种了一些西红柿和辣椒，夏天就可以吃到自己种的蔬菜了。",
            "晚饭后，很多老人喜欢在广场上跳舞和聊天。",
        ],
    ),
    "ja": (
        "kurashi-no-memo.example",
        [
            "週末には家族で近くの公園へ散歩に行くのが楽しみです。",
            "春になると桜が咲き、多くの人がお花見に出かけます。",
            "毎日少しずつ勉強を続けることが、外国語を身につけるための一番の近道です。",
            "祖母が作る味噌汁は、シンプルですがとても優しい味がします。",
            "電車で旅行すると、窓から美しい田舎の景色を眺めることができます。",
            "この町の図書館では、毎週土曜日に子ども向けの読み聞かせ会が開かれています。",
            "健康のために、なるべく階段を使い、よく歩くようにしています。",
            "博物館では、江戸時代の暮らしを紹介する特別展が開催されています。",
            "ベランダでトマトとバジルを育てていて、夏にはたくさん収穫できました。",
            "夕食の後は、家族でお茶を飲みながら一日の出来事を話します。",
        ],
    ),
    "ar": (
        "yawmiyat.example",
        [
            "في عطلة نهاية الأسبوع نذهب مع العائلة إلى الحديقة القريبة من البيت.",
            "يعتبر السوق القديم في المدينة مكانا رائعا لشراء التوابل والفواكه الطازجة.",
            "تعلم لغة جديدة يحتاج إلى صبر وممارسة يومية.",
            "تحضر جدتي الخبز في البيت كل صباح، ورائحته تملأ المطبخ.",
            "المشي لمدة نصف ساعة كل يوم مفيد جدا لصحة القلب.",
            "تنظم مكتبة المدينة أمسيات للقراءة للأطفال في نهاية كل أسبوع.",
            "يضم المتحف الوطني مجموعة كبيرة من القطع الأثرية القديمة.",
            "السفر بالقطار بين المدن مريح ويتيح لنا مشاهدة المناظر الطبيعية الجميلة.",
            "في المساء تجتمع العائلة لشرب الشاي والحديث عن أحداث اليوم.",
            "نزرع في حديقتنا الصغيرة النعناع والطماطم والفلفل.",
        ],
    ),
}
OTHER_DOCS = {"de": 12, "fr": 12, "es": 12, "it": 8, "pt": 8, "nl": 8, "ru": 4, "zh": 4, "ja": 4, "ar": 4}
NO_SPACES = ("zh", "ja")

# ------------------------------------------------------------------------------------------------------ PII
PEOPLE = [
    "Dana Whitfield",
    "Marcus Oyelaran",
    "Priya Raman",
    "Tomas Ekberg",
    "Helen Park",
    "Samuel Okafor",
    "Rosa Lindqvist",
    "Aaron Mbeki",
    "Grace Holloway",
    "Victor Nakamura",
    "Nina Castellano",
    "Owen Brennan",
]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example", "post.example.co.uk"]
PHONES_US = [
    "(212) 555-0147",
    "212-555-0183",
    "+1 415 555 0129",
    "415.555.0162",
    "(646) 555-0110",
    "+1 (312) 555-0175",
    "617-555-0138",
    "(503) 555-0191",
]
PHONES_INTL = [
    "+44 20 7946 0958",
    "+49 30 9018 2274",
    "+34 912 345 678",
    "+39 06 6988 4412",
    "+31 20 794 6612",
    "+44 161 496 0734",
    "+49 89 5123 6640",
    "+353 1 555 0199",
]
IPV4 = [
    "192.0.2.17",
    "198.51.100.23",
    "203.0.113.42",
    "192.0.2.201",
    "198.51.100.7",
    "203.0.113.254",
    "172.16.40.12",
    "10.20.30.41",
]
IPV6 = ["2001:db8:85a3::8a2e:370:7334", "2001:db8::1f", "fe80::1ff:fe23:4567:890a", "2001:db8:0:1:0:0:0:42"]
# (country, BBAN): check digits are computed, so every IBAN passes the ISO 13616 mod-97 check
BBANS = [
    ("DE", "370400440532013000"),
    ("GB", "WEST12345698765432"),
    ("FR", "30006000011234567890189"),
    ("NL", "ABNA0417164300"),
    ("ES", "21000418450200051332"),
    ("IT", "X0542811101000000123456"),
]

PII_EN = [  # sentences to slip into an English document; fields: name, email, phone, ip, ip6, ssn, card, iban
    ("If you have questions about the workshop, write to {name} at {email} or call {phone}.", ("email", "phone")),
    ("Registration forms can be sent to {email} until the end of the month.", ("email",)),
    (
        "Our volunteer coordinator, {name}, is happy to help and can be reached on {phone} most weekday mornings.",
        ("phone",),
    ),
    ("For the group discount, contact {name} by e-mail at {email}.", ("email",)),
    ("Update from the site admin: the mirror at {ip} is back online, and the IPv6 address is {ip6}.", ("ipv4", "ipv6")),
    ("If the page does not load, try the backup server at {ip} instead.", ("ipv4",)),
    ("Refunds for the course fee are paid to IBAN {iban}, so please include your name in the reference.", ("iban",)),
    ("Corrections are welcome: send them to {email} or leave a message on {phone}.", ("email", "phone")),
    (
        "Reader comment: I paid for the course with my card {card} and never received a confirmation, can anyone help?",
        ("credit_card",),
    ),
    (
        "Comment from {name}: the booking form asked for my social security number, and I typed {ssn} before I "
        "noticed it was optional.",
        ("ssn",),
    ),
    ("Reader comment: the membership form printed my SSN {ssn} on the receipt, which seems like a mistake.", ("ssn",)),
    (
        "Reader comment: please remove my earlier post, it showed my full card number {card} by accident.",
        ("credit_card",),
    ),
]
PII_POSTS = [  # whole forum posts and messages with several items
    (
        "Hi all, I am organising the spring plant swap at the community garden this year. If you would like a table, "
        "send me a message at {email} or text me on {phone}. Tables are free, but please bring your own labels and a "
        "box for the plants you take home. We start at ten and finish around one, and there will be tea and cake in "
        "the shed. Thanks to everyone who helped last year, it was a lovely morning.",
        ("email", "phone"),
    ),
    (
        "Help! I filled in the rental application online and only noticed afterwards that the form showed my social "
        "security number {ssn} in the confirmation e-mail, which was also copied to {email}. Does anyone know whether "
        "the letting agency is allowed to store this, and who I should contact to have it removed?",
        ("ssn", "email"),
    ),
    (
        "I think I was charged twice for the concert tickets. The card was {card} and both payments appeared on the "
        "same day. I wrote to the box office but nobody has answered yet. Has anyone else had this problem, and did "
        "your bank refund the second payment without a fuss?",
        ("credit_card",),
    ),
    (
        "Thanks for ordering from our small bakery. As we do not take cards at the market stall, please pay by bank "
        "transfer to {iban} and use your order number as the reference. Questions about allergens can go to {email}, "
        "and we answer every message within two days. Orders placed before Thursday evening are ready for "
        "collection on Saturday morning, wrapped in paper as always.",
        ("iban", "email"),
    ),
    (
        "Our home network keeps dropping. The router hands out {ip} to the laptop and {ip6} over IPv6, but every "
        "evening the connection stops for a few minutes. I have already replaced the cable and updated the firmware. "
        "Any ideas what else I could check before I call the provider on {phone}?",
        ("ipv4", "ipv6", "phone"),
    ),
    (
        "New staff record for the spring term: {name}, social security number {ssn}, contact {phone}, work e-mail "
        "{email}. Salary will be paid to account {iban} from the first of the month. Please keep this sheet in the "
        "locked cabinet and do not share it by e-mail. The induction day starts at nine in the main office, and a "
        "laptop will be ready on the desk.",
        ("ssn", "phone", "email", "iban"),
    ),
    (
        "Reminder for the club trip: the deposit is due next week. You can pay by card over the phone, or send it "
        "with the card details on the form, for example {card}, expiry and name as printed. For anything else, call "
        "{name} on {phone}. We meet at the station at half past seven, so please do not be late.",
        ("credit_card", "phone"),
    ),
    (
        "The shop order came with the wrong size, so I asked for an exchange. The confirmation lists my card as "
        "{card} and my phone number as {phone}, which I find a bit careless on their part. Anyway, the new jacket "
        "arrived quickly and fits well, so I would still order from them again.",
        ("credit_card", "phone"),
    ),
]
PII_OTHER = [
    (
        "de",
        "Bitte überweisen Sie den Betrag bis Ende des Monats auf das Konto {iban}. Bei Fragen erreichen Sie "
        "unser Büro unter {phone} oder per E-Mail an {email}. Vielen Dank für Ihre Unterstützung unseres Vereins. "
        "Mit Ihrem Beitrag finanzieren wir die neuen Spielgeräte für den Kindergarten und das Sommerfest im Park. "
        "Eine Spendenquittung schicken wir Ihnen im Frühjahr automatisch zu.",
        ("iban", "phone", "email"),
    ),
    (
        "fr",
        "Pour toute question sur l'inscription à l'atelier, vous pouvez écrire à {email}. Les places sont "
        "limitées, alors n'attendez pas trop longtemps. Nous vous confirmerons la réservation par courriel. "
        "L'atelier a lieu dans la salle des fêtes, derrière la mairie, et dure environ deux heures. "
        "Le matériel est fourni, mais vous pouvez apporter vos propres carnets et vos crayons préférés.",
        ("email",),
    ),
    (
        "es",
        "Si quieres participar en el club de lectura, escríbenos a {email} o llámanos al {phone}. Nos reunimos "
        "todos los jueves por la tarde en la biblioteca del barrio y cada mes elegimos un libro nuevo. "
        "No hace falta haber leído mucho antes, solo tener ganas de conversar y de conocer a otros vecinos. "
        "Al final de cada encuentro tomamos un café juntos y proponemos ideas para el mes siguiente.",
        ("email", "phone"),
    ),
    (
        "nl",
        "Wil je meedoen aan de buurtmarkt? Stuur dan een bericht naar {email}. De kosten voor een kraam kun je "
        "overmaken naar rekening {iban}, onder vermelding van je naam. We zien je graag op zaterdag. "
        "De markt begint om negen uur op het plein bij de kerk en duurt tot het einde van de middag. "
        "Vergeet niet zelf een tafel en een paar stoelen mee te nemen, want die zijn er niet genoeg.",
        ("email", "iban"),
    ),
]

# -------------------------------------------------------------------------------------- boilerplate and junk
BOILERPLATE = [
    "We use cookies to improve your experience on our site. By continuing to browse, you agree to our use of cookies.",
    "This website uses cookies. Accept all | Reject all | Manage preferences",
    "Click here to subscribe to our newsletter!",
    "Subscribe now and get 10% off your first order. Click here to subscribe.",
    "Home | About | Contact",
    "Home | Blog | Recipes | Shop | About Us | Contact",
    "Skip to main content",
    "Sign in | Register | Forgot your password?",
    "Copyright © 2024 Example Media Group. All rights reserved.",
    "© 2023 All rights reserved. Privacy Policy | Terms of Use | Cookie Settings",
    "JavaScript is required to view this page. Please enable JavaScript in your browser and reload.",
    "You need to enable JavaScript to run this app.",
    "Share this: Facebook | Twitter | Pinterest | Email | Print",
    "Posted in Uncategorized | Leave a comment",
    "« Previous page | Next page »",
    "Loading...",
    "Your cart is empty.",
    "Read more",
    "Related posts",
    "Back to top",
]
LOREM = [
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.",
    "Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.",
    "Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur.",
    "Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum.",
]
MOJIBAKE_SOURCE = [  # correct UTF-8 prose that is then decoded as Windows-1252, as broken crawls do
    "We stopped at a tiny café near the harbour, and the owner’s crème brûlée was the best I’ve ever had.",
    "Don’t worry if your first loaf isn’t perfect; the “ugly” ones usually taste just as good.",
    "The guide explained that the old façade had been restored twice — once in the 1920s and again last spring.",
    "It’s a naïve question, but why does the résumé template ask for a photo?",
    "Our neighbour’s garden is full of jalapeños, and she hands them out to everyone on the street.",
    "The museum’s new wing feels airy and calm, and the café on the top floor has a wonderful view.",
    "I didn’t expect the hike to be so steep, but the view from the top made every step worthwhile.",
    "“Slow down and look around,” my grandfather used to say, and he was right more often than not.",
]
SHORT = ["Read more", "ok", "hello world", "Thanks!", "404 Not Found", "test post please ignore", "N/A", "first"]
SPAM_WORDS = [
    "cheap",
    "best",
    "deal",
    "discount",
    "free shipping",
    "buy",
    "online",
    "sale",
    "watches",
    "sneakers",
    "outlet",
    "replica",
    "price",
    "offer",
    "top rated",
    "official",
    "store",
]
HTML_PROSE = (
    '<div class="post-body"><h2>{title}</h2><p>{p1}</p>\n<p>{p2}</p><ul><li><a href="/tag/tips">tips'
    '</a></li><li><a href="/tag/home">home</a></li></ul></div>'
)
HTML_MARKUP = [
    '<html><head><title>Untitled</title><meta charset="utf-8"></head><body><div id="app"></div>'
    '<script src="/static/bundle.min.js"></script><noscript>Please enable scripts.</noscript></body></html>',
    '<table class="grid"><tr><td>&nbsp;</td><td><img src="/img/spacer.gif" width="1" height="1"></td></tr>'
    '<tr><td colspan="2"><span style="display:none">tracking</span></td></tr></table>',
]
CONTROL_CHARS = ["\x00", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\u200b", "\ufeff"]
SYNONYMS = {
    "often": "frequently",
    "usually": "generally",
    "small": "little",
    "important": "essential",
    "easier": "simpler",
    "good": "decent",
    "help": "assist",
    "quickly": "rapidly",
    "many": "numerous",
    "large": "big",
    "simple": "basic",
    "best": "finest",
    "useful": "helpful",
    "early": "soon",
    "much": "far",
    "great": "huge",
    "very": "really",
    "begin": "start",
    "makes": "renders",
}
SOURCES = ["blog", "news", "forum", "wiki"]


@dataclass
class Doc:
    text: str
    kind: str  # clean | boilerplate_line | pii | boilerplate | junk:<what> | duplicate | near_duplicate
    lang: str = "en"
    site: str = "misc-pages.example"
    source: str = "blog"
    pii: list[str] = field(default_factory=list)
    sentences: tuple = ()  # (pool, index) pairs used, for the overlap check and near-duplicate edits
    topic: str = ""


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these digits are doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def iban(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    raw = f"{country}{98 - int(digits) % 97:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


class Composer:
    """Composes documents from the sentence pools, keeping any two documents' sentence sets distinct."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: list[set] = []

    def pick(self, pools: list[tuple[str, list[str]]], counts: list[int]) -> list[tuple[str, int]]:
        best, best_overlap = None, 2.0
        for _ in range(300):
            chosen = []
            for (name, sents), k in zip(pools, counts):
                chosen += [(name, i) for i in sorted(self.rng.sample(range(len(sents)), k))]
            s = set(chosen)
            overlap = max((len(s & u) / len(s | u) for u in self.used), default=0.0)
            if overlap < best_overlap:
                best, best_overlap = chosen, overlap
            if overlap < MAX_SENTENCE_OVERLAP:
                break
        self.used.append(set(best))
        return best


def paragraphs(sents: list[str], rng: random.Random, sep: str = " ") -> str:
    paras, i = [], 0
    while i < len(sents):
        n = rng.randint(2, 5)
        paras.append(sep.join(sents[i : i + n]))
        i += n
    return "\n\n".join(paras)


def english_doc(comp: Composer, topics: tuple[str, ...], counts: list[int]) -> Doc:
    rng = comp.rng
    pools = [(t, EN[t][2]) for t in topics]
    picked = comp.pick(pools, counts)
    parts = []
    for t in topics:
        parts.append(paragraphs([EN[t][2][i] for name, i in picked if name == t], rng))
    text = "\n\n".join(parts)
    if rng.random() < 0.7:
        text = rng.choice(EN[topics[0]][1]) + "\n\n" + text
    return Doc(
        text, "clean", "en", EN[topics[0]][0], rng.choice(SOURCES), sentences=tuple(picked), topic="+".join(topics)
    )


def other_doc(comp: Composer, lang: str) -> Doc:
    rng = comp.rng
    site, sents = OTHER[lang]
    k = rng.randint(3, 5) if len(sents) <= 10 else rng.randint(5, min(10, len(sents) - 4))
    picked = comp.pick([(lang, sents)], [k])
    sep = "" if lang in NO_SPACES else " "
    return Doc(
        paragraphs([sents[i] for _, i in picked], rng, sep),
        "clean",
        lang,
        site,
        rng.choice(SOURCES),
        sentences=tuple(picked),
        topic=lang,
    )


class PiiMaker:
    """Fills PII placeholders with fake values, recording the type of each one planted."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.ibans = [iban(c, b) for c, b in BBANS]
        self.n = 0

    def fill(self, template: str, types: tuple[str, ...]) -> tuple[str, list[str]]:
        rng, self.n = self.rng, self.n + 1
        name = PEOPLE[self.n % len(PEOPLE)]
        first, last = name.lower().split()
        email_user = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(10, 99)}"])
        card = luhn_complete("4", 16, rng) if self.n % 2 else luhn_complete(str(rng.randint(51, 55)), 16, rng)
        style = self.n % 3
        card = (
            " ".join(card[i : i + 4] for i in range(0, 16, 4))
            if style == 0
            else "-".join(card[i : i + 4] for i in range(0, 16, 4))
            if style == 1
            else card
        )
        values = {
            "name": name,
            "email": f"{email_user}@{DOMAINS[self.n % len(DOMAINS)]}",
            "phone": (PHONES_US + PHONES_INTL)[self.n % (len(PHONES_US) + len(PHONES_INTL))],
            "ip": IPV4[self.n % len(IPV4)],
            "ip6": IPV6[self.n % len(IPV6)],
            "ssn": f"{rng.choice([rng.randint(1, 665), rng.randint(667, 899)]):03d}-{rng.randint(1, 99):02d}-"
            f"{rng.randint(1, 9999):04d}",
            "card": card,
            "iban": self.ibans[self.n % len(self.ibans)],
        }
        text = template.format(**values)
        kinds = [t if t != "phone" else ("phone_us" if values["phone"] in PHONES_US else "phone_intl") for t in types]
        return text, kinds


def mojibake(text: str) -> str:
    out = []
    for ch in text:
        if ord(ch) < 128:
            out.append(ch)
            continue
        for b in ch.encode("utf-8"):
            try:
                out.append(bytes([b]).decode("cp1252"))
            except UnicodeDecodeError:
                out.append(chr(b))
    return "".join(out)


def junk_docs(rng: random.Random, comp: Composer) -> list[Doc]:
    docs = []

    def add(what: str, text: str, source: str = "blog") -> None:
        docs.append(Doc(text, f"junk:{what}", "", "misc-pages.example", source))

    symbols = "#$%&*@!~^+=<>|/\\[]{}()_;:?"
    for _ in range(4):
        add("symbol_soup", "".join(rng.choice(symbols + "  ") for _ in range(rng.randint(80, 400))))
    for s in SHORT:
        add("very_short", s)
    add("repeated_lines", "\n".join(["buy now"] * 40))
    add("repeated_lines", " ".join(["buy now"] * 60))
    add("repeated_lines", "\n".join(["BEST PRICE GUARANTEED!!!", "Order today and save."] * 25), "shop")
    add("repeated_lines", "\n".join(["click here"] * 30 + ["thank you for visiting"]))
    for _ in range(4):
        words = [rng.choice(SPAM_WORDS) for _ in range(rng.randint(60, 150))]
        add("keyword_spam", " ".join(words), "shop")
    for _ in range(3):
        rows = [", ".join(f"{rng.randint(0, 9999)}.{rng.randint(0, 99):02d}" for _ in range(8)) for _ in range(20)]
        add("mostly_numbers", "\n".join(rows))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    add("long_token", "data:image/png;base64," + "".join(rng.choice(alphabet) for _ in range(6000)))
    add(
        "long_token",
        "Download: https://files.example/get?token=" + "".join(rng.choice(alphabet[:62]) for _ in range(3000)),
    )
    add("long_token", "a" * 2500 + "h" * 500 + "!")
    for _ in range(5):
        sents = rng.sample(MOJIBAKE_SOURCE, rng.randint(3, 5))
        add("mojibake", mojibake(" ".join(sents)))
    for _ in range(3):
        d = english_doc(comp, (rng.choice(sorted(EN)),), [rng.randint(5, 7)])
        text = list(d.text)
        for _ in range(rng.randint(8, 20)):
            text.insert(rng.randrange(len(text)), rng.choice(CONTROL_CHARS))
        add("control_chars", "".join(text))
    for _ in range(2):
        t = rng.choice(sorted(EN))
        sents = EN[t][2]
        i = rng.randrange(len(sents) - 6)
        add(
            "html",
            HTML_PROSE.format(title=EN[t][1][0], p1=" ".join(sents[i : i + 3]), p2=" ".join(sents[i + 3 : i + 6])),
        )
    for markup in HTML_MARKUP:
        add("html", markup)
    for _ in range(3):
        d = english_doc(comp, (rng.choice(sorted(EN)),), [rng.randint(5, 7)])
        words = d.text.split(" ")
        add("whitespace", "".join(w + rng.choice(["   ", "\t\t", " \n\n\n\n ", "      ", " "]) for w in words))
    return docs


def boilerplate_docs(rng: random.Random) -> list[Doc]:
    docs = []
    for _ in range(14):
        docs.append(
            Doc(
                "\n".join(rng.sample(BOILERPLATE, rng.randint(3, 8))),
                "boilerplate",
                "en",
                "misc-pages.example",
                rng.choice(SOURCES),
            )
        )
    for _ in range(3):
        docs.append(
            Doc("\n\n".join(rng.sample(LOREM, rng.randint(2, 4))), "boilerplate", "la", "theme-demo.example", "blog")
        )
    docs.append(Doc(BOILERPLATE[10], "boilerplate", "en", "app.example", "blog"))
    docs.append(Doc(BOILERPLATE[11], "boilerplate", "en", "app.example", "blog"))
    docs.append(Doc(BOILERPLATE[0] + "\nAccept | Decline", "boilerplate", "en", "misc-pages.example", "news"))
    return docs


def near_duplicate(d: Doc, how: str, rng: random.Random) -> str:
    if how == "words_changed":
        words = d.text.split(" ")
        spots = [i for i, w in enumerate(words) if w in SYNONYMS]
        for i in sorted(rng.sample(spots, min(2, len(spots)))):
            words[i] = SYNONYMS[words[i]]
        return " ".join(words)
    paras = d.text.split("\n\n")
    if how == "sentence_added":
        topic = d.topic.split("+")[0]
        unused = [s for i, s in enumerate(EN[topic][2]) if (topic, i) not in d.sentences]
        paras[-1] += " " + rng.choice(unused)
        return "\n\n".join(paras)
    if how == "sentence_removed":
        i = max(range(len(paras)), key=lambda j: paras[j].count(". "))
        sents = paras[i].split(". ")
        del sents[rng.randrange(len(sents))]
        paras[i] = ". ".join(sents)
        if not paras[i].endswith("."):
            paras[i] += "."
        return "\n\n".join(paras)
    # whitespace and punctuation: different line breaks, double spaces, trailing spaces, curly quotes
    text = d.text.replace("\n\n", "\n  \n").replace(". ", ".  ").replace("'", "\u2019").replace(", ", " , ", 2)
    return text + "  \n"


def build(seed: int = SEED) -> tuple[list[Doc], Counter]:
    """Every document of the corpus, in file order, and the counts of what was planted."""
    rng = random.Random(seed)
    comp = Composer(rng)
    planted = Counter()
    base: list[Doc] = []
    for topic in sorted(EN):
        for _ in range(13):
            base.append(english_doc(comp, (topic,), [rng.choice([5, 6, 7, 8, 9, 10, 11, 12, 13, 14])]))
    for a, b in MIXED_TOPICS:
        base.append(english_doc(comp, (a, b), [rng.randint(8, 11), rng.randint(8, 11)]))
    for lang, n in OTHER_DOCS.items():
        base += [other_doc(comp, lang) for _ in range(n)]

    english = [d for d in base if d.lang == "en"]
    order = rng.sample(range(len(english)), len(english))
    pii_hosts = [english[i] for i in order[:26]]
    boiler_hosts = [english[i] for i in order[26:52]]
    long_docs = [english[i] for i in order[52:] if len(english[i].text.split()) >= 200]
    near_sources = long_docs[:22]
    exact_sources = [english[i] for i in order[52:] if english[i] not in near_sources][:14]
    exact_sources += [d for d in base if d.lang in ("de", "fr")][:2]

    pm = PiiMaker(rng)
    for i, d in enumerate(pii_hosts):
        template, types = PII_EN[i % len(PII_EN)]
        sentence, kinds = pm.fill(template, types)
        paras = d.text.split("\n\n")
        if i % 2:
            paras[-1] += " " + sentence
        else:
            paras.insert(rng.randint(1, len(paras)), sentence)
        d.text, d.kind, d.pii = "\n\n".join(paras), "pii", kinds
    extra: list[Doc] = []
    for template, types in PII_POSTS:
        text, kinds = pm.fill(template, types)
        extra.append(Doc(text, "pii", "en", "community-board.example", "forum", kinds))
    for lang, template, types in PII_OTHER:
        text, kinds = pm.fill(template, types)
        extra.append(Doc(text, "pii", lang, OTHER[lang][0], "forum", kinds))
    for i, d in enumerate(boiler_hosts):
        lines = rng.sample(BOILERPLATE, 1 + i % 2)
        if i % 3 == 0:
            d.text = lines[0] + "\n" + d.text + "\n" + "\n".join(lines[1:])
        elif i % 3 == 1:
            d.text = "\n".join(lines) + "\n" + d.text
        else:
            d.text = d.text + "\n\n" + "\n".join(lines)
        d.kind = "boilerplate_line"
    extra += boilerplate_docs(rng)
    extra += junk_docs(rng, comp)

    copies: list[Doc] = []
    times = [1] * 8 + [2] * 4 + [3] * 2 + [4] * 2
    for d, n in zip(exact_sources, times):
        copies += [Doc(d.text, "duplicate", d.lang, "aggregator-news.example", "news") for _ in range(n)]
        planted["exact_duplicate_groups"] += 1
    hows = ["words_changed", "sentence_added", "sentence_removed", "whitespace_punct"]
    nears: list[Doc] = []
    for i, d in enumerate(near_sources):
        for j in range(1 + (i < 8)):
            how = hows[(i + j) % len(hows)]
            nears.append(
                Doc(near_duplicate(d, how, rng), "near_duplicate", d.lang, "mirror-pages.example", d.source, topic=how)
            )
            planted[f"near_duplicate:{how}"] += 1
        planted["near_duplicate_groups"] += 1

    docs = base + extra + copies + nears
    rng.shuffle(docs)
    return docs, planted


def write(docs: list[Doc]) -> dict:
    """Write the three files; returns per-file statistics."""
    rng = random.Random(SEED + 1)
    n0 = len(docs) * 2 // 5
    n1 = (len(docs) - n0) // 2
    parts = {"web-00.jsonl": docs[:n0], "web-01.jsonl": docs[n0 : n0 + n1], "web-02.jsonl.gz": docs[n0 + n1 :]}
    stats = {}
    counters = Counter()
    for name, part in parts.items():
        prefix = name.split(".")[0]
        lines, no_id = [], 0
        for d in part:
            counters[prefix] += 1
            num = counters[prefix]
            slug = d.topic.replace("+", "-").replace(":", "-") or d.kind.split(":")[-1]
            rec = {
                "id": f"{prefix}-{num:06d}",
                "text": d.text,
                "url": f"https://{d.site}/{d.source}/{slug}-{num}",
                "source": d.source,
            }
            if rng.random() < 0.06:
                del rec["id"]
                no_id += 1
            lines.append(json.dumps(rec, ensure_ascii=False).encode("utf-8"))
        bad = []
        if name == "web-01.jsonl":

            def nid() -> str:
                counters[prefix] += 1
                return f"{prefix}-{counters[prefix]:06d}"

            url = "https://broken-export.example/page"
            bad = [
                f'{{"id": "{nid()}", "text": "The export stopped halfway through this record, "url": "{url}"'.encode(),
                f'{{"id": "{nid()}", "text": null, "url": "{url}", "source": "blog"}}'.encode(),
                f'{{"id": "{nid()}", "text": 42, "url": "{url}", "source": "blog"}}'.encode(),
                f'{{"id": "{nid()}", "text": "", "url": "{url}", "source": "blog"}}'.encode(),
                f'{{"id": "{nid()}", "text": "Caf'.encode()
                + b"\xe9 cr\xe8me \xff\xfe written in Latin-1"
                + f'", "url": "{url}", "source": "blog"}}'.encode(),
            ]
            for k, line in enumerate(bad):
                lines.insert(12 + 17 * k, line)
        data = b"\n".join(lines) + b"\n"
        path = OUT / name
        if name.endswith(".gz"):
            with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
                f.write(data)
        else:
            path.write_bytes(data)
        stats[name] = {
            "lines": len(lines),
            "documents": len(part),
            "bad_lines": len(bad),
            "without_id": no_id,
            "bytes": path.stat().st_size,
            "uncompressed_bytes": len(data),
        }
    return stats


def readme(docs: list[Doc], planted: Counter, stats: dict) -> str:
    kinds = Counter(d.kind.split(":")[0] for d in docs)
    junk = Counter(d.kind.split(":")[1] for d in docs if d.kind.startswith("junk:"))
    langs = Counter(d.lang for d in docs if d.kind in ("clean", "boilerplate_line", "pii"))
    pii = Counter(t for d in docs for t in d.pii)
    en_words = sorted(len(d.text.split()) for d in docs if d.kind == "clean" and d.lang == "en")

    def rows(counts: Counter) -> str:
        return "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items()))

    files = "\n".join(
        f"| `{n}` | {s['lines']} | {s['documents']} | {s['bad_lines']} | {s['without_id']} | {s['bytes']:,} |"
        for n, s in stats.items()
    )
    return f"""# Example corpus

A small web-like crawl for the README quickstart (`thresher curate examples/quickstart.yaml`). Every text in it
was written for thresher and composed by [`examples/make_corpus.py`](../make_corpus.py) (seeded, standard
library only). The people, addresses, phone numbers, card numbers and bank accounts are fake. Regenerate with

```bash
python examples/make_corpus.py
```

which rewrites these files byte for byte (stable order, gzip mtime 0) and this README with the counts below.

## Files

Each line is `{{"id": ..., "text": ..., "url": ..., "source": ...}}`; ids look like `web-00-000123`. Some
records have no `id` field, so the reader derives theirs from the file and byte offset.

| file | lines | documents | bad lines | without id | bytes |
|---|---|---|---|---|---|
{files}

## What is planted

{len(docs)} documents in all. Document kinds (each document counted once, by what was done to it):

| kind | documents |
|---|---|
{rows(kinds)}

* **clean**: prose on {len(EN)} topics (cooking, astronomy, gardening, history, programming, travel, health,
  finance, photography, birdwatching, home repair, music) and in other languages; English ones have
  {en_words[0]}-{en_words[-1]} words, most in several paragraphs, some with a title line.
* **boilerplate_line**: a clean English document with one or two boilerplate lines (cookie banner, navigation
  menu, "Click here to subscribe", copyright line, ...) before or after it.
* **boilerplate**: pages that are nothing but boilerplate (including {sum(1 for d in docs if d.lang == "la")}
  of lorem ipsum and JavaScript-required notices).
* **pii**: documents carrying personal data (below): English documents with a contact line slipped in,
  forum posts and messages, and {sum(1 for d in docs if d.kind == "pii" and d.lang != "en")} in other languages.
* **duplicate**: verbatim copies (under another URL) of {planted["exact_duplicate_groups"]} documents, some
  copied several times.
* **near_duplicate**: edited copies of {planted["near_duplicate_groups"]} long English documents:

| edit | documents |
|---|---|
{rows(Counter({k.split(":")[1]: v for k, v in planted.items() if k.startswith("near_duplicate:")}))}

Junk documents by what is wrong with them:

| junk | documents |
|---|---|
{rows(junk)}

Languages of the clean, boilerplate_line and pii documents (fastText lid.176 agrees on every one):

| language | documents |
|---|---|
{rows(langs)}

PII values planted (IPs from the documentation and private ranges; US phone numbers in the fictional 555-01xx
range, UK ones in the drama ranges, the others made up; cards pass the Luhn check with Visa 4 or Mastercard 51-55 prefixes; IBANs pass the mod-97 check; SSNs avoid the
never-issued ranges):

| type | values |
|---|---|
{rows(pii)}

Bad lines in `web-01.jsonl` (rejected by the `read` stage): one malformed JSON line, one with
`"text": null`, one with `"text": 42`, one with an empty text and one with invalid UTF-8 bytes.

## License

Apache-2.0, like the rest of thresher; the text was written for thresher.
"""


def main() -> None:
    docs, planted = build()
    OUT.mkdir(exist_ok=True)
    stats = write(docs)
    (OUT / "README.md").write_text(readme(docs, planted, stats), encoding="utf-8")
    total = sum(s["bytes"] for s in stats.values())
    print(
        f"wrote {len(docs)} documents, {sum(s['bad_lines'] for s in stats.values())} bad lines, "
        f"{total:,} bytes to {OUT}"
    )


if __name__ == "__main__":
    main()
