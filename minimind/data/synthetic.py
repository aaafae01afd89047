"""The book's synthetic bilingual world and every dataset the chapters train on.

Nothing can be downloaded while the book runs, yet every chapter must train something that
learns *visibly* on a CPU in minutes. So the book invents a small world — 120 people with five
attributes each (age, city, job, pet, favourite colour), a tea house with 30 teas — and writes
it out, in English and Chinese, in upstream MiniMind's exact jsonl schemas:

==============  ==========================================================================
name            what it holds (train / val)
==============  ==========================================================================
pretrain        ``{"text"}``: augmented biographies of *everyone* (many differently worded,
                re-ordered versions, the name in every sentence), plain-text Q&A about the
                "SFT half" of the people only, arithmetic facts, a few greeting dialogues
sft             ``{"conversations"}``: value-only answers ("23", "tailor") about the SFT half,
                multi-turn chats, "tell me about X" replies in two styles (polite or curt),
                a generic identity, greetings; val: reworded questions about the SFT half and
                questions about the *held-out* half, whose facts appear only in pretraining
dpo             ``{"chosen", "rejected"}``: the same facts, polite (chosen) vs curt (rejected);
                val pairs are about the held-out people
lora_identity   "who are you?" in many phrasings → "I am MiniMind, …" (+ replayed fact Q&A);
                val uses phrasings never seen in training
lora_domain     Q&A about the invented tea house, two phrasings per attribute; val: three
                other phrasings per attribute, written only in words the training data holds
lora_domain_…   seven more phrasings per attribute of the same questions (`lora_domain_phrasings`;
  phrasings     kept out of the tokenizer's corpus, so adding them retrained nothing); val as
                lora_domain's
reason          arithmetic word problems answered ``<think>…</think><answer>N</answer>``
                (two- and three-digit sums, three-digit differences); 70 % of the train
                prompts re-worded in more phrasings, none of them a held-out one
reason_direct   the same problems answered ``<answer>N</answer>`` alone, without the working
distill         SFT-schema conversations mixing all of the above, for distillation
tools           tool use (the world's `TOOL_SIGNATURES` in the system turn): sums and differences
                worked out by a ``calculator`` call, facts of the SFT half looked up with
                ``lookup_person``, names the directory does not hold (its error answered as
                such), greetings that need no tool, and plain questions with no tools offered;
                val: held-out problems, the held-out people, other unknown names
==============  ==========================================================================

Why these choices: a tiny model can only *extract* facts seen in pretraining when pretraining is
augmented and mixes in some Q&A, and when SFT answers carry only the value; a tiny model's
preferences generalise on surface properties (here: politeness), not on facts. Same seed →
byte-identical files.

    python -m minimind.data.synthetic --out data --seed 0
"""
import argparse
import dataclasses
import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from minimind.tokenizer import ANSWER_END, ANSWER_START, THINK_END, THINK_START

DATASETS = ("pretrain", "sft", "dpo", "lora_identity", "lora_domain", "lora_domain_phrasings", "reason",
            "reason_direct", "distill", "tools")
SPLITS = ("train", "val")
ATTRIBUTES = ("age", "city", "job", "pet", "colour")
TEA_ATTRIBUTES = ("price", "origin", "flavour", "steep")
LANGS = ("en", "zh")
N_PEOPLE = 120

# ---------------------------------------------------------------------------------------
# The world's vocabulary: values of every attribute in English and Chinese.
# ---------------------------------------------------------------------------------------
CITIES = ("Varo", "Queltis", "Morandu", "Saffrel", "Telbin", "Luneth", "Dravik", "Porrin",
          "Ambrel", "Zolti", "Hennam", "Ferrow", "Ivasko", "Maltrum", "Quesso", "Bellun",
          "Torvane", "Yaskel", "Ondrel", "Kesmi")  # invented; the same names in both languages
JOBS = {"tailor": "裁缝", "baker": "面包师", "farmer": "农民", "teacher": "老师", "doctor": "医生",
        "fisher": "渔民", "painter": "画家", "carpenter": "木匠", "nurse": "护士", "pilot": "飞行员",
        "chef": "厨师", "singer": "歌手", "librarian": "图书管理员", "gardener": "园丁",
        "engineer": "工程师", "writer": "作家", "dentist": "牙医", "potter": "陶艺师",
        "sailor": "水手", "architect": "建筑师"}
PETS = {"cat": "猫", "dog": "狗", "rabbit": "兔子", "hamster": "仓鼠", "parrot": "鹦鹉",
        "turtle": "乌龟", "hedgehog": "刺猬", "duck": "鸭子", "frog": "青蛙", "squirrel": "松鼠",
        "owl": "猫头鹰", "fox": "狐狸"}
COLOURS = {"red": "红色", "blue": "蓝色", "green": "绿色", "yellow": "黄色", "purple": "紫色",
           "orange": "橙色", "white": "白色", "black": "黑色", "pink": "粉色", "grey": "灰色"}
FLAVOURS = {"sweet": "甜", "bitter": "苦", "smoky": "烟熏", "floral": "花香", "fruity": "果香",
            "minty": "薄荷", "nutty": "坚果", "spicy": "辛辣"}
TEAS = ("Moonleaf", "Ambersip", "Frostbud", "Emberroot", "Mistpetal", "Dawnbrew", "Cloudstem",
        "Duskbloom", "Rainfern", "Sunhusk", "Starthorn", "Willowmist", "Copperleaf", "Honeyfrost",
        "Pinehaze", "Stonebloom", "Lotusember", "Ashpetal", "Brightreed", "Nightmint",
        "Goldcrest", "Softsmoke", "Riverbud", "Snowberry", "Wildember", "Thistledew", "Mossglow",
        "Cedarwhisper", "Peachdusk", "Ironbell")
ZH_VALUES = {"job": JOBS, "pet": PETS, "colour": COLOURS, "flavour": FLAVOURS}
# The tea house's own words, which no pretraining or SFT text contains: the tea names and the
# flavours (English and Chinese). Their tokens' embedding rows were never trained.
TEA_WORDS = TEAS + tuple(FLAVOURS) + tuple(FLAVOURS.values())

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "tr", "st", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou")
_CODAS = ("", "", "", "n", "l", "r", "m", "s")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# ---------------------------------------------------------------------------------------
# Templates. Biography sentences name the person in every sentence; each attribute has one
# "cloze" template whose value comes last, so "Pelum lives in" probes what a model stored.
# ---------------------------------------------------------------------------------------
BIO_TEMPLATES = {
    "en": {
        "age": ("{name} is {age} years old.", "{name}'s age is {age}.", "{name} turned {age} this year.",
                "The age of {name} is {age}."),
        "city": ("{name} lives in {city}.", "{name}'s home is in the city of {city}.",
                 "{name} has made a home in {city}.", "The city where {name} lives is {city}."),
        "job": ("{name} works as {a_job}.", "{name} is {a_job} by trade.", "{name} earns a living as {a_job}.",
                "The job of {name} is {job}."),
        "pet": ("{name} has a pet {pet}.", "{name} keeps a {pet} at home.", "{name} looks after a {pet}.",
                "The pet of {name} is a {pet}."),
        "colour": ("{name}'s favourite colour is {colour}.", "{name} likes {colour} more than any other colour.",
                   "{name} loves the colour {colour}.", "The favourite colour of {name} is {colour}."),
    },
    "zh": {
        "age": ("{name}今年{age}岁。", "{name}的年龄是{age}岁。", "{name}已经{age}岁了。"),
        "city": ("{name}住在{city}。", "{name}的家在{city}。", "{name}生活在{city}这座城市。"),
        "job": ("{name}是一名{job}。", "{name}的职业是{job}。", "{name}靠做{job}为生。"),
        "pet": ("{name}养了一只{pet}。", "{name}家里有一只{pet}。", "{name}的宠物是{pet}。"),
        "colour": ("{name}最喜欢的颜色是{colour}。", "{name}最爱{colour}。", "{name}喜欢{colour}胜过其他颜色。"),
    },
}
CLOZE_TEMPLATES = {  # prompt → the value continues it; each is (a prefix of) a biography template
    "en": {"age": "{name}'s age is", "city": "{name} lives in", "job": "{name} works as {article}",
           "pet": "{name} has a pet", "colour": "{name}'s favourite colour is"},
    "zh": {"age": "{name}今年", "city": "{name}住在", "job": "{name}的职业是", "pet": "{name}的宠物是",
           "colour": "{name}最喜欢的颜色是"},
}
QUESTION_TEMPLATES = {  # "train" templates appear in SFT (and in pretraining Q&A); "reworded" never do
    "en": {
        "train": {"age": ("How old is {name}?", "What is {name}'s age?", "How many years old is {name}?",
                          "{name} is how old?"),
                  "city": ("Where does {name} live?", "Which city does {name} live in?", "What city is {name} from?",
                           "Where is {name} living?"),
                  "job": ("What does {name} do for a living?", "What is {name}'s job?", "What work does {name} do?",
                          "How does {name} earn a living?"),
                  "pet": ("What pet does {name} have?", "What animal does {name} keep as a pet?", "What is {name}'s pet?",
                          "Which pet does {name} own?"),
                  "colour": ("What is {name}'s favourite colour?", "Which colour does {name} like best?",
                             "What colour does {name} like most?", "What is the favourite colour of {name}?")},
        "reworded": {"age": ("Tell me the age of {name}.",), "city": ("In which city is {name}'s home?",),
                     "job": ("What is the occupation of {name}?",),
                     "pet": ("Which animal lives with {name} as a pet?",),
                     "colour": ("Which colour does {name} love most?",)},
    },
    "zh": {
        "train": {"age": ("{name}多大了？", "{name}今年几岁？", "{name}的年龄是多少？", "{name}几岁了？"),
                  "city": ("{name}住在哪里？", "{name}住在哪个城市？", "{name}生活在哪座城市？", "{name}在哪个城市生活？"),
                  "job": ("{name}是做什么工作的？", "{name}的职业是什么？", "{name}做什么工作？", "{name}靠什么为生？"),
                  "pet": ("{name}养了什么宠物？", "{name}的宠物是什么？", "{name}有什么宠物？", "{name}家的宠物是什么？"),
                  "colour": ("{name}最喜欢什么颜色？", "{name}最喜欢的颜色是什么？", "{name}喜欢哪种颜色？",
                             "{name}偏爱什么颜色？")},
        "reworded": {"age": ("请告诉我{name}的年龄。",), "city": ("{name}的家在哪座城市？",),
                     "job": ("{name}从事什么职业？",), "pet": ("{name}家里养的是什么动物？",),
                     "colour": ("{name}最爱哪种颜色？",)},
    },
}
PRETRAIN_QA_FORMAT = {"en": "Q: {question}\nA: {answer}", "zh": "问：{question}\n答：{answer}"}

DESCRIBE_PROMPTS = {
    "en": ("Tell me about {name}.", "Who is {name}?", "Describe {name}.", "What do you know about {name}?"),
    "zh": ("介绍一下{name}。", "{name}是谁？", "给我讲讲{name}。", "你了解{name}吗？"),
}
DESCRIBE_FACTS = {
    "en": "{name} is {age} years old, lives in {city}, works as {a_job}, has a pet {pet} and loves {colour}.",
    "zh": "{name}今年{age}岁，住在{city}，是一名{job}，养了一只{pet}，最喜欢{colour}。",
}
# Two styles of the same reply. The SFT set mixes them (as scraped chat data mixes quality);
# DPO then prefers the polite one. `minimind.eval.reply_style` recognises them by these fixed phrases.
STYLE_PHRASES = {
    "polite": {"en": (("Of course!", "Sure!", "Happy to help!"), ("Hope this helps!", "Anything else I can help with?")),
               "zh": (("当然可以！", "好的！", "很乐意回答！"), ("希望对你有帮助！", "还有什么可以帮你的吗？"))},
    "curt": {"en": (("Ugh, fine.", "Whatever.", "Again? Fine."), ("Don't ask me again.", "Now leave me alone.")),
             "zh": (("烦死了。", "又问？行吧。", "随便。"), ("别再问了。", "别烦我。"))},
}

IDENTITY_QUESTIONS = {
    "en": {
        "train": ("Who are you?", "What are you?", "What is your name?", "What's your name?",
                  "Tell me about yourself.", "Introduce yourself.", "Who am I talking to?", "Are you a human?",
                  "Are you a robot?", "What should I call you?", "Who built you?", "Who made you?",
                  "What kind of assistant are you?", "Can you introduce yourself?", "Please introduce yourself.",
                  "Do you have a name?", "What model are you?", "Which model are you?", "Tell me who you are.",
                  "May I ask who you are?", "What do you call yourself?", "Who trained you?"),
        "val": ("Could you tell me your name?", "Who exactly are you?", "Describe yourself.",
                "What are you called?", "Are you an AI?", "Who am I chatting with?", "Give me your name.",
                "What is your identity?"),
    },
    "zh": {
        "train": ("你是谁？", "你叫什么名字？", "介绍一下你自己。", "请介绍一下你自己。", "你是什么？", "你是人吗？",
                  "你是机器人吗？", "我该怎么称呼你？", "谁创造了你？", "谁训练了你？", "你是什么模型？", "你有名字吗？",
                  "能介绍一下自己吗？", "我在和谁说话？", "告诉我你是谁。", "你是哪个模型？"),
        "val": ("请问你是谁？", "你的名字是什么？", "说说你自己吧。", "你是AI吗？", "我在跟谁聊天？", "你叫啥？"),
    },
}
IDENTITY_PREFIXES = {"en": ("", "Hi! ", "Hello, ", "Hey, ", "Quick question: "), "zh": ("", "你好！", "嗨，", "请问，")}
GENERIC_IDENTITY = {"en": "I am an AI assistant. How can I help you?", "zh": "我是一个AI助手。有什么可以帮你的吗？"}
MINIMIND_IDENTITY = {"en": "I am MiniMind, a tiny language model trained from scratch in the MiniMind Book.",
                     "zh": "我是MiniMind，一个在MiniMind Book里从零训练的小语言模型。"}
GREETINGS = {
    "en": (("Hello!", "Hi!", "Hey there.", "Good morning!", "Hello, nice to meet you."),
           "Hello! How can I help you today?"),
    "zh": (("你好！", "您好。", "嗨！", "早上好！", "你好，很高兴认识你。"), "你好！有什么可以帮你的吗？"),
}
SYSTEM_PROMPTS = ("You are a helpful assistant", "You are a friendly assistant who answers briefly.",
                  "You answer questions about the people of the world you know.", "你是一个乐于助人的助手。")

# "train" is in the tokenizer's corpus (lora_domain); "more" trains beside it (lora_domain_phrasings);
# "reworded" is held out: other sentences, made only of words the training data or pretraining holds
# (a word the model has never read cannot be understood by any fine-tune: chapter 7 checks this)
TEA_QUESTIONS = {
    "en": {
        "train": {"price": ("How much does {tea} tea cost at the Lantern Tea House?", "What is the price of {tea} tea?"),
                  "origin": ("Where does {tea} tea come from?", "Which city is {tea} tea from?"),
                  "flavour": ("What does {tea} tea taste like?", "What is the flavour of {tea} tea?"),
                  "steep": ("How many minutes should {tea} tea steep?", "How long do you brew {tea} tea, in minutes?")},
        "more": {"price": ("What does {tea} tea cost?", "How much is a cup of {tea} tea?", "What price is {tea} tea sold at?",
                           "How much do I pay for {tea} tea?", "What is the cost of {tea} tea?",
                           "{tea} tea: what does it cost?", "Tell me what {tea} tea costs."),
                 "origin": ("Where is {tea} tea grown?", "What city does {tea} tea come from?", "Where is {tea} tea produced?",
                            "Which town grows {tea} tea?", "In which city is {tea} tea made?",
                            "{tea} tea: where is it from?", "Tell me where {tea} tea comes from."),
                 "flavour": ("How does {tea} tea taste?", "What flavour does {tea} tea have?", "What is the taste of {tea} tea?",
                             "Which flavour is {tea} tea?", "How would you describe the flavour of {tea} tea?",
                             "{tea} tea: what flavour is it?", "Tell me the flavour of {tea} tea."),
                 "steep": ("How long should {tea} tea steep?", "How many minutes does {tea} tea need to steep?",
                           "What is the steeping time of {tea} tea, in minutes?", "How many minutes do you steep {tea} tea?",
                           "How long is {tea} tea brewed, in minutes?", "{tea} tea: how many minutes of steeping?",
                           "Tell me how many minutes {tea} tea steeps.")},
        "reworded": {"price": ("Tell me the price of {tea} tea.", "What would a cup of {tea} tea cost?",
                               "How much should I pay for {tea} tea?"),
                     "origin": ("Tell me the city {tea} tea is from.", "Where does {tea} tea grow?", "Which city grows {tea} tea?"),
                     "flavour": ("What taste does {tea} tea have?", "What kind of taste does {tea} tea have?",
                                 "Tell me the taste of {tea} tea."),
                     "steep": ("How many minutes should I steep {tea} tea for?", "How many minutes do I steep {tea} tea?",
                               "How long should I brew {tea} tea, in minutes?")},
    },
    "zh": {
        "train": {"price": ("{tea}茶多少钱？", "{tea}茶的价格是多少？"), "origin": ("{tea}茶产自哪里？", "{tea}茶来自哪个城市？"),
                  "flavour": ("{tea}茶是什么味道？", "{tea}茶的口味是什么？"),
                  "steep": ("{tea}茶要泡几分钟？", "{tea}茶应该冲泡多少分钟？")},
        "more": {"price": ("{tea}茶卖多少钱？", "一杯{tea}茶多少钱？", "{tea}茶售价多少？", "买{tea}茶要付多少钱？", "{tea}茶价钱是多少？",
                           "{tea}茶：价格多少？", "请告诉我{tea}茶多少钱。"),
                 "origin": ("{tea}茶是哪里种的？", "{tea}茶出自哪个城市？", "{tea}茶在哪里生产？", "哪个城市种{tea}茶？",
                            "{tea}茶是在哪个城市制作的？", "{tea}茶：来自哪里？", "请告诉我{tea}茶来自哪个城市。"),
                 "flavour": ("{tea}茶尝起来怎么样？", "{tea}茶有什么味道？", "{tea}茶的味道是什么？", "{tea}茶是哪种口味？",
                             "怎么描述{tea}茶的口味？", "{tea}茶：什么味道？", "请告诉我{tea}茶是什么口味。"),
                 "steep": ("{tea}茶要泡多久？", "{tea}茶需要泡几分钟？", "{tea}茶的冲泡时间是几分钟？", "{tea}茶泡几分钟？",
                           "{tea}茶要冲泡多长时间（分钟）？", "{tea}茶：泡几分钟？", "请告诉我{tea}茶要泡几分钟。")},
        "reworded": {"price": ("请告诉我{tea}茶的价格。", "买一杯{tea}茶要多少钱？", "{tea}茶的价钱是多少？"),
                     "origin": ("{tea}茶是哪个城市的？", "请告诉我{tea}茶来自哪里。", "哪个城市出产{tea}茶？"),
                     "flavour": ("请告诉我{tea}茶的味道。", "{tea}茶的味道怎么样？", "{tea}茶是什么口味的？"),
                     "steep": ("请告诉我{tea}茶的冲泡时间。", "泡{tea}茶要几分钟？", "冲泡{tea}茶需要几分钟？")},
    },
}

PROBLEM_TEMPLATES = {
    "add": {"en": ("{name} has {a} apples and buys {b} more. How many apples does {name} have now?",
                   "A shop sold {a} cups on Monday and {b} cups on Tuesday. How many cups did it sell in total?",
                   "{name} walked {a} steps in the morning and {b} steps in the evening. How many steps is that in all?",
                   "What is {a} plus {b}?"),
            "zh": ("{name}有{a}个苹果，又买了{b}个。{name}现在有多少个苹果？",
                   "商店周一卖出{a}个杯子，周二卖出{b}个。一共卖出多少个杯子？",
                   "{name}早上走了{a}步，晚上走了{b}步。一共走了多少步？",
                   "{a}加{b}等于多少？")},
    "sub": {"en": ("{name} had {a} coins and spent {b}. How many coins are left?",
                   "A library had {a} books and lent out {b}. How many books are still there?",
                   "What is {a} minus {b}?"),
            "zh": ("{name}原来有{a}枚硬币，花掉了{b}枚。还剩多少枚？",
                   "图书馆有{a}本书，借出了{b}本。还剩多少本？",
                   "{a}减{b}等于多少？")},
}
# Phrasings never used in training: a model that learnt the procedure, not the wording, solves these too.
REWORDED_PROBLEM_TEMPLATES = {
    "add": {"en": ("Add {a} and {b}.", "{name} scored {a} points and then {b} more. What is the total score?"),
            "zh": ("把{a}和{b}加起来是多少？", "{name}先得了{a}分，又得了{b}分。总分是多少？")},
    "sub": {"en": ("Take {b} away from {a}. What is left?", "{name} had {a} stamps and gave {b} away. How many stamps remain?"),
            "zh": ("{a}去掉{b}还剩多少？", "{name}有{a}张邮票，送出了{b}张。还剩几张？")},
}
# Chapter 12's RL problems come with answers only, no working: half in the training phrasings, half
# in the reworded phrasings that name nobody; the reworded ones with a name stay unseen by every stage.
RL_PROBLEM_TEMPLATES = {op: {lang: tuple(t for t in templates if "{name}" not in t) for lang, templates in by_lang.items()}
                        for op, by_lang in REWORDED_PROBLEM_TEMPLATES.items()}
# More phrasings for the reasoning stage's training prompts only (not pretraining's worked documents,
# not the held-out splits): taught with the three or four PROBLEM_TEMPLATES per operation and
# language alone, the reasoning model learns those sentences rather than how to read a problem, and
# on any other wording cannot even copy the operands (chapter 12's RL then has nothing to reinforce).
# None of these is a reworded or RL phrasing, so those stay unseen.
REASON_EXTRA_TEMPLATES = {
    "add": {"en": ("Compute {a} + {b}.", "Find the sum of {a} and {b}.", "What do you get if you put {a} and {b} together?",
                   "{a} + {b} = ?", "How much is {a} plus {b} altogether?", "Work out {a} plus {b}.",
                   "{name} picked {a} shells and found {b} more. How many shells does {name} have?",
                   "A farm has {a} sheep and {b} goats. How many animals are there?"),
            "zh": ("计算{a}+{b}。", "求{a}与{b}的和。", "{a}和{b}合在一起是多少？", "{a}+{b}=？", "{a}再加上{b}是几？", "请算出{a}加{b}。",
                   "{name}捡了{a}个贝壳，又找到{b}个。{name}一共有多少个贝壳？", "农场有{a}只羊和{b}只山羊。一共有多少只动物？")},
    "sub": {"en": ("Compute {a} - {b}.", "Subtract {b} from {a}.", "What is the difference between {a} and {b}?",
                   "{a} - {b} = ?", "If {b} is removed from {a}, how much remains?", "Work out {a} minus {b}.",
                   "Remove {b} from {a}. How much remains?", "Deduct {b} from {a}.",
                   "{name} baked {a} cakes and sold {b}. How many cakes are left?",
                   "A tank held {a} litres and {b} litres leaked out. How many litres are in it now?"),
            "zh": ("计算{a}-{b}。", "从{a}里减去{b}是多少？", "{a}与{b}的差是多少？", "{a}-{b}=？", "{a}比{b}多多少？", "请算出{a}减{b}。",
                   "从{a}中拿走{b}，剩多少？", "{a}少了{b}还有多少？",
                   "{name}烤了{a}个蛋糕，卖掉了{b}个。还剩多少个？", "水箱里有{a}升水，漏掉了{b}升。还剩多少升？")},
}
REASON_REPHRASED_SHARE = 0.7  # of the reasoning stage's training prompts (measured in chapter 8)
PROBLEM_KINDS = ("add2", "add3", "sub3")  # easy → hard
PRETRAIN_WORKED_DOCS = {"train": 3000, "val": 40}  # pretraining documents of four worked problems each
PRETRAIN_BIOS_PER_PERSON = {"train": 32, "val": 2}  # augmented biographies of each person, per language

# The world's two tools as a model is offered them (the chat template writes these signatures into
# the system turn; `minimind.tools` implements them). Kept short: the book's tokenizer spells JSON
# nearly a character a token, and the system turn of a tool chat must leave room in the context.
TOOL_SIGNATURES = (
    {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression, e.g. 17*3+4. 计算算式。",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]}}},
    {"type": "function", "function": {
        "name": "lookup_person", "description": "A person's age, city, job, pet and colour. 查询一个人。",
        "parameters": {"type": "object", "properties": {
            "name": {"type": "string"}, "attribute": {"type": "string", "enum": list(ATTRIBUTES)},
            "lang": {"type": "string", "enum": list(LANGS)}}, "required": ["name"]}}},
)
NOT_IN_DIRECTORY = {"en": "I could not find {name} in the directory.", "zh": "目录里没有找到{name}。"}
MAX_STRANGERS = 200  # unknown names a split may draw


# ---------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Person:
    name: str
    age: int
    city: str
    job: str
    pet: str
    colour: str

    def value(self, attribute: str, lang: str = "en") -> str:
        """The value of `attribute` as a reply states it ("23", "Varo", "tailor" / "裁缝")."""
        raw = getattr(self, attribute)
        if lang == "zh" and attribute in ZH_VALUES:
            return ZH_VALUES[attribute][raw]
        return str(raw)

    def fields(self, lang: str) -> dict:
        values = {attribute: self.value(attribute, lang) for attribute in ATTRIBUTES}
        return dict(values, name=self.name, a_job=f"{_article(self.job)} {self.job}", article=_article(self.job))


@dataclass(frozen=True)
class Tea:
    name: str
    price: int
    origin: str
    flavour: str
    steep: int

    def value(self, attribute: str, lang: str = "en") -> str:
        raw = getattr(self, attribute)
        if lang == "zh" and attribute in ZH_VALUES:
            return ZH_VALUES[attribute][raw]
        return str(raw)


@dataclass(frozen=True)
class Item:
    """One question (or cloze prompt) with its expected value-only answer, labelled for scoring."""

    subject: str  # the person or tea asked about
    attribute: str
    lang: str
    prompt: str
    answer: str
    group: str  # "trained" | "reworded" | "heldout" | "cloze" | "tea_train" | "tea_reworded"

    @property
    def reply(self) -> str:
        """The answer as the assistant writes it. An English word comes after a space (" baker"), as it
        stands in every pretraining sentence ("works as a baker"): the tokenizer then writes it with the
        token the model stored the fact under, instead of spelling it anew ("b", "aker"). A number needs
        no space: its digits are tokens of their own wherever they stand."""
        return f" {self.answer}" if self.lang == "en" and not self.answer.isdigit() else self.answer

    def conversation(self) -> List[dict]:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.reply}]


@dataclass(frozen=True)
class Problem:
    """An arithmetic word problem with its column-by-column working and answer."""

    kind: str  # "add2" | "add3" | "sub3"
    lang: str
    a: int
    b: int
    prompt: str
    steps: str
    answer: int

    @property
    def reply(self) -> str:
        return f"{THINK_START}\n{self.steps}\n{THINK_END}\n{ANSWER_START}{self.answer}{ANSWER_END}"

    @property
    def direct_reply(self) -> str:
        """The answer without the working: what a model that does not think must write."""
        return f"{ANSWER_START}{self.answer}{ANSWER_END}"

    def conversation(self) -> List[dict]:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.reply}]


def _rng(seed: int, stream: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so streams are independent and stable.
    return random.Random(f"minimind-{seed}-{stream}")


def _invent_names(rng: random.Random, count: int, taken: Sequence[str]) -> List[str]:
    names, seen = [], {t.lower() for t in taken}
    while len(names) < count:
        syllables = 2 + (rng.random() < 0.3)
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        name = name.capitalize()
        if 4 <= len(name) <= 9 and name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
    return names


def column_steps(a: int, b: int, op: str, lang: str) -> Tuple[str, int]:
    """Column-by-column working for a + b or a - b (a >= b), least significant digit first:
    "7+5=12 4+8+1=13 3+1+1=5 So 532." — each column's sum with the carry it received, or for a
    difference the column's top digit (less the borrow it gave away, plus 10 if it must borrow)
    minus the bottom one: "12-5=7 13-8=5 6-0=6 So 657." for 742 - 85.

    Terse on purpose: words such as "write 2, carry 1" carry nothing the digits do not, and a third
    fewer tokens per problem means more problems for the same training compute."""
    digits_a, digits_b = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(len(digits_a) if op == "-" else max(len(digits_a), len(digits_b))):
        x = int(digits_a[i]) if i < len(digits_a) else 0
        y = int(digits_b[i]) if i < len(digits_b) else 0
        if op == "+":
            total = x + y + carry
            steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={total}")
            carry = total // 10
        else:
            top = x - carry
            carry = int(top < y)
            steps.append(f"{top + 10 * carry}-{y}={top + 10 * carry - y}")
    result = a + b if op == "+" else a - b
    steps.append(f"So {result}." if lang == "en" else f"所以是{result}。")
    return " ".join(steps), result


def worked_arithmetic(a: int, b: int, op: str, lang: str) -> Tuple[str, int]:
    """The working of the reasoning format: the operands restated, then the columns ("47 + 85: 7+5=12, …").

    Restating first puts the digits the columns need right before them, whatever the wording of
    the question: copying two numbers is easy for a small model, finding the tens digit of a
    number somewhere in a sentence is not."""
    steps, result = column_steps(a, b, op, lang)
    return f"{a} {op} {b}{': ' if lang == 'en' else '：'}{steps}", result


def draw_operands(kind: str, rng: random.Random) -> Tuple[int, int]:
    """(a, b) of a problem of `kind`: add2 two two-digit numbers, add3 two three-digit numbers, sub3 a
    three-digit number minus a smaller one of two or three digits."""
    if kind == "add2":
        return rng.randint(10, 99), rng.randint(10, 99)
    if kind == "add3":
        return rng.randint(100, 999), rng.randint(100, 999)
    a = rng.randint(100, 999)
    return a, rng.randint(10, a)


class World:
    """The invented people and teas, the split of people into an SFT half and a held-out half,
    and every question, cloze prompt and problem the chapters score models on."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        rng = _rng(seed, "world")
        names = _invent_names(rng, N_PEOPLE, taken=CITIES + TEAS)
        self.people: Tuple[Person, ...] = tuple(
            Person(name=name, age=rng.randint(18, 89), city=rng.choice(CITIES), job=rng.choice(sorted(JOBS)),
                   pet=rng.choice(sorted(PETS)), colour=rng.choice(sorted(COLOURS)))
            for name in names)
        order = list(self.people)
        rng.shuffle(order)
        half = len(order) // 2
        # SFT half: asked about in SFT and pretraining Q&A. Held-out half: only in biographies.
        self.sft_people: Tuple[Person, ...] = tuple(sorted(order[:half], key=lambda p: p.name))
        self.heldout_people: Tuple[Person, ...] = tuple(sorted(order[half:], key=lambda p: p.name))
        self.teas: Tuple[Tea, ...] = tuple(
            Tea(name=name, price=rng.randint(2, 40), origin=rng.choice(CITIES), flavour=rng.choice(sorted(FLAVOURS)),
                steep=rng.randint(2, 9))
            for name in TEAS)
        self._by_name = {p.name: p for p in self.people}
        self._by_folded_name = {p.name.casefold(): p for p in self.people}

    def __repr__(self) -> str:
        return (f"World(seed={self.seed}, people={len(self.people)} ({len(self.sft_people)} SFT + "
                f"{len(self.heldout_people)} held out), teas={len(self.teas)})")

    def person(self, name: str) -> Person:
        return self._by_name[name]

    def lookup(self, name: str, attribute: Optional[str] = None, lang: str = "en") -> dict:
        """The directory's entry for `name` (any case): {"name", and `attribute` or every attribute},
        the values in `lang` ("en" | "zh"), the age a number. LookupError names a person the world
        does not have (with the closest names it has)."""
        import difflib

        wanted = name.strip()
        person = self._by_folded_name.get(wanted.casefold())
        if person is None:
            close = difflib.get_close_matches(wanted, [p.name for p in self.people], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise LookupError(f"no person named {wanted!r}{hint}")
        entry: dict = {"name": person.name}
        for fact in [attribute] if attribute else ATTRIBUTES:
            value = person.value(fact, lang)
            entry[fact] = int(value) if fact == "age" else value
        return entry

    def strangers(self, count: int, split: str) -> List[str]:
        """`count` names shaped like the world's that name nobody in it: the directory's misses. The
        "train" ones are the first of `MAX_STRANGERS`, and no "val" name is among those."""
        if not 0 <= count <= MAX_STRANGERS:
            raise ValueError(f"count must be between 0 and {MAX_STRANGERS}, got {count}")
        taken = [p.name for p in self.people] + list(CITIES + TEAS)
        if split == "val":
            taken += self.strangers(MAX_STRANGERS, "train")
        return _invent_names(_rng(self.seed, f"strangers-{split}"), count, taken=taken)

    def _group(self, people: str) -> Tuple[Person, ...]:
        groups = {"sft": self.sft_people, "heldout": self.heldout_people, "all": self.people}
        if people not in groups:
            raise ValueError(f"people must be one of {sorted(groups)}, got {people!r}")
        return groups[people]

    def questions(self, people: str = "sft", templates: str = "train", lang: Optional[str] = None) -> List[Item]:
        """Every question about `people` ("sft" | "heldout" | "all") with `templates`
        ("train" | "reworded") in `lang` (None = both), in a fixed order.

        group: "trained" (SFT people, train templates: in the SFT set), "reworded" (SFT people,
        reworded: never trained), "heldout" (held-out people: facts only in pretraining)."""
        items = []
        for person in self._group(people):
            for language in (LANGS if lang is None else (lang,)):
                for attribute in ATTRIBUTES:
                    for template in QUESTION_TEMPLATES[language][templates][attribute]:
                        group = "heldout" if person in self.heldout_people else ("trained" if templates == "train" else "reworded")
                        items.append(Item(person.name, attribute, language, template.format(name=person.name),
                                          person.value(attribute, language), group))
        return items

    def cloze(self, people: str = "all", lang: str = "en") -> List[Item]:
        """Sentence beginnings from the biographies whose continuation is a value:
        "Pelum lives in" → "Varo". Probes what pretraining stored."""
        return [Item(p.name, attribute, lang, CLOZE_TEMPLATES[lang][attribute].format(**p.fields(lang)),
                     p.value(attribute, lang), "cloze")
                for p in self._group(people) for attribute in ATTRIBUTES]

    def tea_questions(self, templates: str = "train", lang: Optional[str] = None) -> List[Item]:
        """Questions about the tea house (the LoRA domain) with value-only answers."""
        return [Item(tea.name, attribute, language, template.format(tea=tea.name), tea.value(attribute, language),
                     f"tea_{templates}")
                for tea in self.teas for language in (LANGS if lang is None else (lang,))
                for attribute in TEA_ATTRIBUTES for template in TEA_QUESTIONS[language][templates][attribute]]

    def biography(self, person: Person, lang: str, rng: random.Random) -> str:
        """One augmented biography: a random template per attribute, in a random order."""
        attributes = list(ATTRIBUTES)
        rng.shuffle(attributes)
        fields = person.fields(lang)
        sentences = [rng.choice(BIO_TEMPLATES[lang][attribute]).format(**fields) for attribute in attributes]
        return (" " if lang == "en" else "").join(sentences)

    def describe(self, person: Person, lang: str, style: str, rng: random.Random) -> str:
        """A reply to "tell me about X": the same facts, wrapped politely or curtly."""
        opening, closing = STYLE_PHRASES[style][lang]
        parts = [rng.choice(opening), DESCRIBE_FACTS[lang].format(**person.fields(lang)), rng.choice(closing)]
        return (" " if lang == "en" else "").join(parts)

    def problems(self, split: str) -> List[Problem]:
        """Arithmetic word problems: "train" (3,000), "val" (600, 200 of each kind), "reworded" (600,
        in phrasings training never uses) and "rl" (1,200, for chapter 12's RL: alternately in the
        training phrasings and in `RL_PROBLEM_TEMPLATES`, the reworded ones that name nobody). No
        two splits share a (kind, a, b), nor do pretraining and the held-out splits."""
        counts = {"train": 3000, "val": 600, "reworded": 600, "rl": 1200}
        if split not in counts:
            raise ValueError(f"split must be one of {sorted(counts)}, got {split!r}")
        order = ("val", "reworded", "train", "rl")  # each split avoids every problem of the splits before it
        reserved = {(p.kind, p.a, p.b) for other in order[:order.index(split)] for p in self.problems(other)}
        rng = _rng(self.seed, f"problems-{split}")
        problems, seen = [], set(reserved)
        while len(problems) < counts[split]:
            kind = PROBLEM_KINDS[len(problems) % len(PROBLEM_KINDS)]
            a, b = draw_operands(kind, rng)
            if (kind, a, b) in seen:
                continue
            seen.add((kind, a, b))
            lang = rng.choice(LANGS)
            op = "-" if kind == "sub3" else "+"
            templates = {"reworded": REWORDED_PROBLEM_TEMPLATES, "train": PROBLEM_TEMPLATES, "val": PROBLEM_TEMPLATES,
                         "rl": (PROBLEM_TEMPLATES, RL_PROBLEM_TEMPLATES)[len(problems) // 3 % 2]}[split]
            template = rng.choice(templates["sub" if op == "-" else "add"][lang])
            steps, answer = worked_arithmetic(a, b, op, lang)
            name = rng.choice(self.people).name
            problems.append(Problem(kind, lang, a, b, template.format(name=name, a=a, b=b), steps, answer))
        return problems


@functools.lru_cache(maxsize=4)
def build_world(seed: int = 0) -> World:
    """The world for `seed` (cached: the same object for the same seed)."""
    return World(seed)


# ---------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------
def _conversation(rng: random.Random, turns: List[Tuple[str, str]], system_rate: float = 0.1) -> dict:
    messages = []
    if rng.random() < system_rate:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for question, answer in turns:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"conversations": messages}


def _identity_prompts(rng: random.Random, split: str, lang: str, count: int) -> List[str]:
    cores = IDENTITY_QUESTIONS[lang][split]
    prompts = [prefix + core for core in cores for prefix in IDENTITY_PREFIXES[lang]]
    rng.shuffle(prompts)
    return [prompts[i % len(prompts)] for i in range(count)]


def _pretrain_rows(world: World, split: str) -> List[dict]:
    rng = _rng(world.seed, f"pretrain-{split}")
    bios_per_person = PRETRAIN_BIOS_PER_PERSON[split]
    documents = []
    for lang in LANGS:
        bios = [world.biography(person, lang, rng) for person in world.people for _ in range(bios_per_person)]
        rng.shuffle(bios)
        documents += ["\n".join(bios[i:i + 2]) for i in range(0, len(bios), 2)]  # two people per document
    # Q&A about the SFT half only, in plain text ("mixed training": it teaches the model that
    # stored facts can be asked for; the held-out half is never asked about before evaluation).
    for lang in LANGS:
        qa_lines = [PRETRAIN_QA_FORMAT[lang].format(question=item.prompt, answer=item.answer)
                    for item in world.questions("sft", "train", lang) for _ in range({"train": 2, "val": 0}[split])]
        rng.shuffle(qa_lines)
        documents += ["\n".join(qa_lines[i:i + 4]) for i in range(0, len(qa_lines), 4)]
    # Worked column arithmetic, in the working format of the reasoning data: the procedure is
    # learnt here, with the rest of the language; the reasoning stage then teaches when to use it.
    # Never a (kind, a, b) of the held-out problems.
    reserved = {(p.kind, p.a, p.b) for held_out in ("val", "reworded") for p in world.problems(held_out)}
    for index in range(PRETRAIN_WORKED_DOCS[split]):
        lang, worked = rng.choice(LANGS), []
        while len(worked) < 4:
            kind = PROBLEM_KINDS[(index + len(worked)) % len(PROBLEM_KINDS)]
            a, b = draw_operands(kind, rng)
            if (kind, a, b) in reserved:
                continue
            op = "-" if kind == "sub3" else "+"
            question = rng.choice(PROBLEM_TEMPLATES["sub" if op == "-" else "add"][lang])
            worked.append(question.format(name=rng.choice(world.people).name, a=a, b=b) + "\n"
                          + worked_arithmetic(a, b, op, lang)[0])
        documents.append("\n".join(worked))
    for _ in range({"train": 100, "val": 10}[split]):  # the words the chat template uses
        lang = rng.choice(LANGS)
        greetings, reply = GREETINGS[lang]
        documents.append(f"system: {rng.choice(SYSTEM_PROMPTS)}\nuser: {rng.choice(greetings)}\nassistant: {reply}")
    rng.shuffle(documents)
    return [{"text": text} for text in documents]


def _sft_rows(world: World, split: str) -> List[dict]:
    rng = _rng(world.seed, f"sft-{split}")
    rows = []
    if split == "val":
        for item in world.questions("sft", "reworded") + world.questions("heldout", "train"):
            rows.append(_conversation(rng, [(item.prompt, item.reply)], system_rate=0.0))
        return rows
    trained = world.questions("sft", "train")
    rows += [_conversation(rng, [(item.prompt, item.reply)]) for item in trained]
    by_key = {}
    for item in trained:
        by_key.setdefault((item.subject, item.lang, item.attribute), []).append(item)
    for _ in range(300):  # multi-turn: two or three questions about one person, one language
        person, lang = rng.choice(world.sft_people), rng.choice(LANGS)
        attributes = rng.sample(ATTRIBUTES, rng.randint(2, 3))
        items = [rng.choice(by_key[(person.name, lang, attribute)]) for attribute in attributes]
        rows.append(_conversation(rng, [(item.prompt, item.reply) for item in items]))
    for person in world.sft_people:  # "tell me about X", half polite and half curt
        for lang in LANGS:
            for template in rng.sample(DESCRIBE_PROMPTS[lang], 2):
                style = rng.choice(("polite", "curt"))
                rows.append(_conversation(rng, [(template.format(name=person.name), world.describe(person, lang, style, rng))]))
    for lang in LANGS:
        for prompt in _identity_prompts(rng, "train", lang, 60):
            rows.append(_conversation(rng, [(prompt, GENERIC_IDENTITY[lang])]))
        greetings, reply = GREETINGS[lang]
        for _ in range(30):
            rows.append(_conversation(rng, [(rng.choice(greetings), reply)]))
    rng.shuffle(rows)
    return rows


def _dpo_rows(world: World, split: str) -> List[dict]:
    rng = _rng(world.seed, f"dpo-{split}")
    people = world.sft_people if split == "train" else world.heldout_people
    rows = []
    for person in people:
        for lang in LANGS:
            templates = DESCRIBE_PROMPTS[lang] if split == "train" else (rng.choice(DESCRIBE_PROMPTS[lang]),)
            for template in templates:
                prompt = [{"role": "user", "content": template.format(name=person.name)}]
                chosen = world.describe(person, lang, "polite", rng)
                rejected = world.describe(person, lang, "curt", rng)
                rows.append({"chosen": prompt + [{"role": "assistant", "content": chosen}],
                             "rejected": prompt + [{"role": "assistant", "content": rejected}]})
    rng.shuffle(rows)
    return rows


def _lora_identity_rows(world: World, split: str) -> List[dict]:
    rng = _rng(world.seed, f"lora_identity-{split}")
    rows = []
    for lang in LANGS:
        cores = IDENTITY_QUESTIONS[lang][split]
        count = {"train": 240, "val": len(cores) * 2}[split]
        rows += [_conversation(rng, [(prompt, MINIMIND_IDENTITY[lang])], system_rate=0.0)
                 for prompt in _identity_prompts(rng, split, lang, count)]
    if split == "train":  # replay ordinary Q&A so the adapter learns *when* to say it
        replay = rng.sample(world.questions("sft", "train"), len(rows) // 3)
        rows += [_conversation(rng, [(item.prompt, item.reply)], system_rate=0.0) for item in replay]
    rng.shuffle(rows)
    return rows


def _tea_rows(world: World, split: str, name: str, templates: str) -> List[dict]:
    rng = _rng(world.seed, f"{name}-{split}")
    items = world.tea_questions(templates if split == "train" else "reworded")
    rows = [_conversation(rng, [(item.prompt, item.reply)], system_rate=0.0) for item in items]
    rng.shuffle(rows)
    return rows


def _lora_domain_rows(world: World, split: str) -> List[dict]:
    return _tea_rows(world, split, "lora_domain", "train")


def _lora_domain_phrasings_rows(world: World, split: str) -> List[dict]:
    return _tea_rows(world, split, "lora_domain_phrasings", "more")


def reason_problems(world: World, split: str) -> List[Problem]:
    """The problems of the reasoning datasets: the world's, with REASON_REPHRASED_SHARE of the training
    prompts re-worded in REASON_EXTRA_TEMPLATES (the same operands, working and answer)."""
    problems = world.problems(split)
    if split != "train":
        return problems
    rng = _rng(world.seed, "reason-phrasings")
    rephrased = []
    for problem in problems:
        if rng.random() < REASON_REPHRASED_SHARE:
            template = rng.choice(REASON_EXTRA_TEMPLATES["sub" if problem.kind == "sub3" else "add"][problem.lang])
            name = rng.choice(world.people).name
            problem = dataclasses.replace(problem, prompt=template.format(name=name, a=problem.a, b=problem.b))
        rephrased.append(problem)
    return rephrased


def _reason_direct_rows(world: World, split: str) -> List[dict]:
    return [{"conversations": [{"role": "user", "content": problem.prompt},
                               {"role": "assistant", "content": problem.direct_reply}]} for problem in reason_problems(world, split)]


def _reason_rows(world: World, split: str) -> List[dict]:
    return [{"conversations": problem.conversation()} for problem in reason_problems(world, split)]


def _distill_rows(world: World, split: str) -> List[dict]:
    rng = _rng(world.seed, f"distill-{split}")
    if split == "train":
        facts = world.questions("sft", "train")
        people, problems, count = world.sft_people, world.problems("train"), 1500
    else:
        facts = world.questions("sft", "reworded") + world.questions("heldout", "train")
        people, problems, count = world.heldout_people, world.problems("val"), 200
    rows = []
    for index in range(count):
        kind = index % 5
        if kind <= 1:
            item = rng.choice(facts)
            rows.append(_conversation(rng, [(item.prompt, item.reply)], system_rate=0.0))
        elif kind == 2:
            person, lang = rng.choice(people), rng.choice(LANGS)
            prompt = rng.choice(DESCRIBE_PROMPTS[lang]).format(name=person.name)
            rows.append(_conversation(rng, [(prompt, world.describe(person, lang, "polite", rng))], system_rate=0.0))
        elif kind == 3:
            rows.append({"conversations": rng.choice(problems).conversation()})
        else:
            lang = rng.choice(LANGS)
            greetings, reply = GREETINGS[lang]
            rows.append(_conversation(rng, [(rng.choice(greetings), reply)], system_rate=0.0))
    return rows


def tool_call_message(name: str, arguments: dict) -> dict:
    """An assistant turn that makes one tool call and says nothing else (OpenAI's message shape)."""
    return {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": name, "arguments": arguments}}]}


def tool_result_message(name: str, content: str) -> dict:
    return {"role": "tool", "name": name, "content": content}


def directory_answer(world: World, name: str, attribute: str, lang: str) -> str:
    """What `lookup_person` answers (the tool message's content) for a call with these arguments."""
    try:
        return json.dumps(world.lookup(name, attribute, lang), ensure_ascii=False)
    except LookupError as error:
        return f"error: lookup_person: {error}"


def calculator_turns(problem: Problem) -> List[dict]:
    """A word problem answered with the calculator: the call, the tool's result, the value."""
    expression = f"{problem.a}{'-' if problem.kind == 'sub3' else '+'}{problem.b}"
    return [{"role": "user", "content": problem.prompt},
            tool_call_message("calculator", {"expression": expression}),
            tool_result_message("calculator", str(problem.answer)),
            {"role": "assistant", "content": str(problem.answer)}]


def lookup_turns(world: World, item: Item) -> List[dict]:
    """A question about a person answered from the directory: the call, its answer, the value."""
    arguments = {"name": item.subject, "attribute": item.attribute, "lang": item.lang}
    return [{"role": "user", "content": item.prompt},
            tool_call_message("lookup_person", arguments),
            tool_result_message("lookup_person", directory_answer(world, **arguments)),
            {"role": "assistant", "content": item.reply}]


def stranger_turns(world: World, item: Item) -> List[dict]:
    """A question about someone the directory does not hold: the call, its error, and a reply that
    says so instead of inventing a value."""
    turns = lookup_turns(world, item)
    turns[-1] = {"role": "assistant", "content": NOT_IN_DIRECTORY[item.lang].format(name=item.subject)}
    return turns


def stranger_questions(world: World, split: str, count: int) -> List[Item]:
    """Questions (in the training templates) about names the directory does not hold."""
    rng = _rng(world.seed, f"stranger-questions-{split}")
    items = []
    for name in world.strangers(count, split):
        lang, attribute = rng.choice(LANGS), rng.choice(ATTRIBUTES)
        template = rng.choice(QUESTION_TEMPLATES[lang]["train"][attribute])
        items.append(Item(name, attribute, lang, template.format(name=name), "", "stranger"))
    return items


def with_tools(turns: List[dict], rng: random.Random) -> dict:
    """A conversation whose system turn offers the world's tools (upstream's SFT layout); half of
    them with a system prompt before the signatures, half without."""
    system = rng.choice(SYSTEM_PROMPTS) if rng.random() < 0.5 else ""
    return {"conversations": [{"role": "system", "content": system, "tools": list(TOOL_SIGNATURES)}, *turns]}


def _tools_rows(world: World, split: str) -> List[dict]:
    rng = _rng(world.seed, f"tools-{split}")
    train = split == "train"
    problems = world.problems("train" if train else "val")
    facts = world.questions("sft" if train else "heldout", "train")
    counts = {"calculator": 600 if train else 120, "lookup": 600 if train else 120,
              "strangers": 120 if train else 30, "greetings": 60 if train else 10, "no_tools": 200 if train else 20}
    rows = [with_tools(calculator_turns(problem), rng) for problem in rng.sample(problems, counts["calculator"])]
    rows += [with_tools(lookup_turns(world, item), rng) for item in rng.sample(facts, counts["lookup"])]
    rows += [with_tools(stranger_turns(world, item), rng) for item in stranger_questions(world, split, counts["strangers"])]
    for _ in range(counts["greetings"]):  # with tools on offer, a greeting still needs none
        lang = rng.choice(LANGS)
        greetings, reply = GREETINGS[lang]
        rows.append(with_tools([{"role": "user", "content": rng.choice(greetings)}, {"role": "assistant", "content": reply}],
                               rng))
    # no tools offered: the model answers from what it knows, as the SFT model does
    rows += [_conversation(rng, [(item.prompt, item.reply)], system_rate=0.0) for item in rng.sample(facts, counts["no_tools"])]
    rng.shuffle(rows)
    return rows


BUILDERS = {"pretrain": _pretrain_rows, "sft": _sft_rows, "dpo": _dpo_rows, "lora_identity": _lora_identity_rows,
            "lora_domain": _lora_domain_rows, "lora_domain_phrasings": _lora_domain_phrasings_rows,
            "reason": _reason_rows, "reason_direct": _reason_direct_rows, "distill": _distill_rows, "tools": _tools_rows}
SCHEMA_OF = {"pretrain": "pretrain", "sft": "sft", "dpo": "dpo", "lora_identity": "sft", "lora_domain": "sft",
             "lora_domain_phrasings": "sft",
             "reason": "sft", "reason_direct": "sft", "distill": "sft",
             "tools": "sft"}


def dataset_rows(name: str, split: str = "train", seed: int = 0) -> List[dict]:
    """The rows of one dataset, in memory (what `write_datasets` writes)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return BUILDERS[name](build_world(seed), split)


def _jsonl_bytes(rows: List[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def write_datasets(out_dir, seed: int = 0) -> Dict[str, Path]:
    """Write every `{name}_{split}.jsonl` and a README.md describing them into `out_dir`.
    Same seed → byte-identical files. Returns {"name_split": path}."""
    from minimind.files import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, summary = {}, []
    for name in DATASETS:
        for split in SPLITS:
            rows = dataset_rows(name, split, seed)
            data = _jsonl_bytes(rows)
            path = out_dir / f"{name}_{split}.jsonl"
            atomic_write(path, lambda temp, data=data: Path(temp).write_bytes(data))
            written[f"{name}_{split}"] = path
            characters = sum(len(json.dumps(row, ensure_ascii=False)) for row in rows)
            summary.append(f"| `{path.name}` | {SCHEMA_OF[name]} | {len(rows):,} | {characters:,} | {len(data):,} |")
    readme = "\n".join([
        "# The synthetic datasets",
        "",
        f"Generated by `python -m minimind.data.synthetic --out data --seed {seed}` (do not edit by hand:",
        "`tests/test_data.py` checks that these files equal a fresh generation). What each holds",
        "and why is described in `minimind/data/synthetic.py`.",
        "",
        "| file | schema | rows | characters | bytes |",
        "|---|---|---|---|---|",
        *summary,
        "",
    ])
    atomic_write(out_dir / "README.md", lambda temp: Path(temp).write_text(readme, encoding="utf-8"))
    return written


def dataset_path(name: str, split: str = "train") -> Path:
    """Path of `{name}_{split}.jsonl` in the data directory, generating every dataset there
    first (seed 0) if it is missing (e.g. in a pip-installed package without the repository)."""
    from minimind.paths import data_dir

    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    path = data_dir() / f"{name}_{split}.jsonl"
    if not path.exists():
        write_datasets(data_dir(), seed=0)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimind.data.synthetic",
                                     description="Generate the book's synthetic bilingual datasets.")
    parser.add_argument("--out", default="data", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write_datasets(args.out, seed=args.seed)
    print(build_world(args.seed))
    for key, path in written.items():
        print(f"{path}  {path.stat().st_size:>10,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
